"""Request bodies read in bounded pieces, gunzipped on the fly.

git compresses large fetch negotiations (``Content-Encoding: gzip``) and
sends bodies larger than its post buffer with chunked transfer encoding;
aiohttp undoes the chunking, this module the compression. Output pieces are
at most CHUNK_SIZE bytes, also when a small compressed input inflates to a
large output, so a hostile body cannot make the gateway hold much at once.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

from aiohttp import StreamReader

CHUNK_SIZE = 64 * 1024

IDENTITY_ENCODINGS = frozenset({"", "identity"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


class BadRequestBody(ValueError):
    """The body cannot be decoded; the message says why."""


def check_encoding(content_encoding: str) -> str:
    """The normalised encoding name; raises BadRequestBody for one this
    gateway cannot decode."""
    encoding = content_encoding.strip().lower()
    if encoding not in IDENTITY_ENCODINGS | GZIP_ENCODINGS:
        raise BadRequestBody(
            f"unsupported Content-Encoding {content_encoding!r}: send the body plain or gzip-encoded"
        )
    return encoding


class GzipDecoder:
    """Incremental gunzip whose output comes in pieces of at most
    CHUNK_SIZE bytes, however much one input piece inflates to."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def decode(self, compressed: bytes) -> Iterator[bytes]:
        """The output `compressed` completes, piece by piece (a generator:
        the next piece is only inflated when the previous one was taken)."""
        inflater = self._inflater
        try:
            data = inflater.decompress(compressed, CHUNK_SIZE)
            while data:
                yield data
                data = inflater.decompress(inflater.unconsumed_tail, CHUNK_SIZE)
        except zlib.error as error:
            raise BadRequestBody(f"the request body is not valid gzip: {error}") from error
        if inflater.unused_data:
            raise BadRequestBody("the gzip request body has data after its end")

    def finish(self) -> None:
        """Check that the stream ended where the body did."""
        if not self._inflater.eof:
            raise BadRequestBody("the gzip request body is truncated")


async def body_chunks(stream: StreamReader, content_encoding: str) -> AsyncIterator[bytes]:
    """The decoded body in pieces of at most CHUNK_SIZE bytes."""
    encoding = check_encoding(content_encoding)
    if encoding in IDENTITY_ENCODINGS:
        async for chunk in stream.iter_chunked(CHUNK_SIZE):
            yield chunk
        return
    decoder = GzipDecoder()
    async for compressed in stream.iter_chunked(CHUNK_SIZE):
        for data in decoder.decode(compressed):
            yield data
    decoder.finish()
