"""gzip request bodies inflated incrementally, in bounded pieces."""

from __future__ import annotations

import gzip

import pytest

from praefect.gateway.body import CHUNK_SIZE, BadRequestBody, GzipDecoder, check_encoding


def decode_all(compressed: bytes, piece: int) -> list[bytes]:
    decoder = GzipDecoder()
    out: list[bytes] = []
    for offset in range(0, len(compressed), piece):
        out.extend(decoder.decode(compressed[offset : offset + piece]))
    decoder.finish()
    return out


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_any_split_of_the_input_gives_the_original(piece: int) -> None:
    original = b"".join(b"want %040x\n" % n for n in range(2000))
    assert b"".join(decode_all(gzip.compress(original), piece)) == original


def test_a_highly_compressed_body_comes_out_in_bounded_pieces() -> None:
    # 64 MiB of zeros compress to about 64 KiB: one input piece must not
    # become one 64 MiB output.
    size = 64 * 1024 * 1024
    compressed = gzip.compress(bytes(size), compresslevel=9)
    decoder = GzipDecoder()
    total = 0
    largest = 0
    for piece in decoder.decode(compressed):
        total += len(piece)
        largest = max(largest, len(piece))
    decoder.finish()
    assert total == size
    assert largest <= CHUNK_SIZE


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"plain text, not gzip", "not valid gzip"),
        (gzip.compress(b"x" * 1000)[:-12], "truncated"),
        (gzip.compress(b"x") + b"trailing", "data after its end"),
    ],
)
def test_bad_gzip_is_refused_with_the_reason(body: bytes, problem: str) -> None:
    with pytest.raises(BadRequestBody, match=problem):
        decode_all(body, 4096)


@pytest.mark.parametrize(("header", "encoding"), [("", ""), ("gzip", "gzip"), (" X-GZIP ", "x-gzip"), ("identity", "identity")])
def test_supported_encodings(header: str, encoding: str) -> None:
    assert check_encoding(header) == encoding


@pytest.mark.parametrize("header", ["br", "deflate", "zstd", "gzip, gzip"])
def test_other_encodings_are_refused(header: str) -> None:
    with pytest.raises(BadRequestBody, match="unsupported Content-Encoding"):
        check_encoding(header)
