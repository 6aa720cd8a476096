"""Parsing `git diff` output into the per-file diffs of Gitaly's DiffService.

`CommitDiffParser` reads the output of
`git diff --raw --patch -z --no-abbrev --full-index --find-renames=30%`:
first the raw entries (NUL separated, so paths need no unquoting), then the
patches. It follows Gitaly's parser (internal/gitaly/diff/diff.go):

- every raw entry is one file; a type change (`T`) becomes a deletion
  followed by an addition, as git prints two patches for it;
- a file whose patch git left out (whitespace-only changes under `-b`/`-w`)
  gets an empty patch and skips the limit checks;
- `raw_patch_data` is the patch from the first hunk header on: the
  `diff --git`, `index`, mode and `---`/`+++` lines are dropped; a
  `Binary files ... differ` line is kept and marks the file binary;
- hunk headers (`@@`) do not count towards the line and byte limits;
- `collapse_diffs` empties the patch of a file once the files, lines or bytes
  seen exceed the safe limits (`collapsed`); `enforce_limits` empties a patch
  of `max_patch_bytes` or more (`too_large`, per-extension limits win) and
  ends the diff with an overflow marker at the file in which `max_files` is
  exceeded or `max_lines`/`max_bytes` is reached;
- every limit is first capped by Gitaly's upper bounds.

Memory stays bounded: without limits patches are passed on as they are read
(`PatchChunk`); with limits a patch is held only until it is certain to be
dropped, and the limits cap how much that can be. Lines of any length are
read in pieces.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

# Gitaly's upper bounds for the limits a caller may ask for.
MAX_FILES_UPPER_BOUND = 5000
MAX_LINES_UPPER_BOUND = 250000
MAX_BYTES_UPPER_BOUND = 5000 * 5120
SAFE_MAX_FILES_UPPER_BOUND = 500
SAFE_MAX_LINES_UPPER_BOUND = 25000
SAFE_MAX_BYTES_UPPER_BOUND = 500 * 5120
MAX_PATCH_BYTES_UPPER_BOUND = 512000

READ_SIZE = 64 * 1024
# Paths are at most a few KiB even when quoted; a longer header is not git's.
MAX_HEADER_LINE = 1024 * 1024

_STATUSES_WITH_TWO_PATHS = frozenset("RC")


class DiffParseError(Exception):
    """git printed something this parser does not understand."""


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One line of `git diff --raw -z`."""

    old_mode: int
    new_mode: int
    from_id: str
    to_id: str
    status: str  # the status letter: A, C, D, M, R, T, U or X
    from_path: bytes
    to_path: bytes


@dataclass(slots=True)
class FileDiff:
    """One file of a CommitDiff, complete with its flags.

    `patch` holds the patch when it was buffered; a streamed patch was handed
    out in `PatchChunk`s before this and `patch` is empty. `source` is the raw
    entry the file came from (a type change yields two files of one entry).
    """

    from_path: bytes = b""
    to_path: bytes = b""
    from_id: str = ""
    to_id: str = ""
    old_mode: int = 0
    new_mode: int = 0
    binary: bool = False
    patch: bytes = b""
    collapsed: bool = False
    too_large: bool = False
    overflow_marker: bool = False
    source: RawEntry | None = None


@dataclass(frozen=True, slots=True)
class PatchChunk:
    """A piece of the patch of `diff`, passed on before the file is complete."""

    diff: FileDiff
    data: bytes


@dataclass(frozen=True, slots=True)
class DiffLimits:
    """The limits of a CommitDiffRequest, with Gitaly's meaning (module docstring)."""

    enforce_limits: bool = False
    max_files: int = 0
    max_lines: int = 0
    max_bytes: int = 0
    max_patch_bytes: int = 0
    max_patch_bytes_for_file_extension: Mapping[str, int] = field(default_factory=dict)
    collapse_diffs: bool = False
    safe_max_files: int = 0
    safe_max_lines: int = 0
    safe_max_bytes: int = 0
    collect_all_paths: bool = False

    def bounded(self) -> DiffLimits:
        """The limits capped by Gitaly's upper bounds (per-extension ones too,
        which Gitaly leaves unbounded)."""
        return replace(
            self,
            max_files=min(self.max_files, MAX_FILES_UPPER_BOUND),
            max_lines=min(self.max_lines, MAX_LINES_UPPER_BOUND),
            max_bytes=min(self.max_bytes, MAX_BYTES_UPPER_BOUND),
            max_patch_bytes=min(self.max_patch_bytes, MAX_PATCH_BYTES_UPPER_BOUND),
            max_patch_bytes_for_file_extension={
                key: min(value, MAX_PATCH_BYTES_UPPER_BOUND)
                for key, value in self.max_patch_bytes_for_file_extension.items()
            },
            safe_max_files=min(self.safe_max_files, SAFE_MAX_FILES_UPPER_BOUND),
            safe_max_lines=min(self.safe_max_lines, SAFE_MAX_LINES_UPPER_BOUND),
            safe_max_bytes=min(self.safe_max_bytes, SAFE_MAX_BYTES_UPPER_BOUND),
        )

    @property
    def can_drop_patches(self) -> bool:
        return self.enforce_limits or self.collapse_diffs

    def max_patch_bytes_for(self, path: bytes) -> int:
        """`max_patch_bytes`, or the limit for the file's extension (Go's
        filepath.Ext of the base name, or the whole name when it has none)."""
        if self.max_patch_bytes_for_file_extension:
            name = os.fsdecode(path.rsplit(b"/", 1)[-1])
            dot = name.rfind(".")
            key = name[dot:] if dot >= 0 else name
            limit = self.max_patch_bytes_for_file_extension.get(key)
            if limit is not None:
                return limit
        return self.max_patch_bytes


class LineReader:
    """Lines and NUL-terminated tokens from a stream, with lines of any length
    readable piece by piece."""

    def __init__(self, stream: asyncio.StreamReader, read_size: int = READ_SIZE) -> None:
        self._stream = stream
        self._read_size = read_size
        self._buffer = b""
        self._position = 0
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self._stream.read(self._read_size)
        if not data:
            self._eof = True
            return False
        self._buffer = self._buffer[self._position :] + data
        self._position = 0
        return True

    async def peek(self, size: int) -> bytes:
        """Up to `size` bytes ahead without consuming them (fewer at the end)."""
        while len(self._buffer) - self._position < size and await self._fill():
            pass
        return self._buffer[self._position : self._position + size]

    async def at_end(self) -> bool:
        return not await self.peek(1)

    async def line_pieces(self) -> AsyncIterator[bytes]:
        """The current line, newline included, in pieces of at most a buffer."""
        while True:
            newline = self._buffer.find(b"\n", self._position)
            if newline >= 0:
                piece = self._buffer[self._position : newline + 1]
                self._position = newline + 1
                yield piece
                return
            if self._position < len(self._buffer):
                piece = self._buffer[self._position :]
                self._position = len(self._buffer)
                yield piece
            if not await self._fill():
                return

    async def skip_line(self) -> None:
        async for _ in self.line_pieces():
            pass

    async def read_line(self, limit: int = MAX_HEADER_LINE) -> bytes:
        pieces: list[bytes] = []
        size = 0
        async for piece in self.line_pieces():
            size += len(piece)
            if size > limit:
                raise DiffParseError(f"a line of git's output is longer than {limit} bytes")
            pieces.append(piece)
        return b"".join(pieces)

    async def read_token(
        self, separator: bytes = b"\0", limit: int = MAX_HEADER_LINE
    ) -> bytes | None:
        """The next token without its separator; None at the end of the stream."""
        while True:
            end = self._buffer.find(separator, self._position)
            if end >= 0:
                token = self._buffer[self._position : end]
                self._position = end + len(separator)
                return token
            if len(self._buffer) - self._position > limit:
                raise DiffParseError(f"a field of git's output is longer than {limit} bytes")
            if not await self._fill():
                rest = self._buffer[self._position :]
                self._position = len(self._buffer)
                return rest or None


async def read_raw_entries(reader: LineReader) -> AsyncIterator[RawEntry]:
    """The entries of `--raw -z` output, up to the empty token that separates
    them from the patches (or the end of the output)."""
    while True:
        token = await reader.read_token()
        if not token:
            return
        header = token.decode("ascii", errors="replace")
        fields = header.split(" ")
        if not header.startswith(":") or len(fields) != 5 or not fields[4]:
            raise DiffParseError(f"unexpected raw diff line {header!r}")
        status = fields[4][0]
        from_path = await reader.read_token()
        if from_path is None:
            raise DiffParseError("raw diff output ends without a path")
        to_path = from_path
        if status in _STATUSES_WITH_TWO_PATHS:
            second = await reader.read_token()
            if second is None:
                raise DiffParseError("raw diff output ends without the new path of a rename")
            to_path = second
        try:
            old_mode, new_mode = int(fields[0][1:], 8), int(fields[1], 8)
        except ValueError:
            raise DiffParseError(f"unexpected modes in raw diff line {header!r}") from None
        yield RawEntry(old_mode, new_mode, fields[2], fields[3], status, from_path, to_path)


# git's quote.c: characters quoted by a backslash and a letter, or octal.
_C_ESCAPES = {0x07: b"a", 0x08: b"b", 0x09: b"t", 0x0A: b"n", 0x0B: b"v", 0x0C: b"f", 0x0D: b"r"}


def _must_quote(byte: int) -> bool:
    # core.quotePath=true (forced in the command) also quotes bytes >= 0x80.
    return byte < 0x20 or byte in (0x22, 0x5C) or byte >= 0x7F


def c_quote_body(data: bytes) -> bytes:
    """`data` escaped as git's quote_c_style does, without the double quotes."""
    out = bytearray()
    for byte in data:
        if not _must_quote(byte):
            out.append(byte)
        elif byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte in _C_ESCAPES:
            out += b"\\" + _C_ESCAPES[byte]
        else:
            out += b"\\%03o" % byte
    return bytes(out)


def quote_prefixed(prefix: bytes, path: bytes) -> bytes:
    """git's quote_two(prefix, path): quoted as a whole when either needs it."""
    if any(_must_quote(byte) for byte in prefix + path):
        return b'"' + c_quote_body(prefix) + c_quote_body(path) + b'"'
    return prefix + path


def diff_header(from_path: bytes, to_path: bytes) -> bytes:
    """The `diff --git` line git prints for a file (with a/ and b/ prefixes)."""
    return (
        b"diff --git "
        + quote_prefixed(b"a/", from_path)
        + b" "
        + quote_prefixed(b"b/", to_path)
        + b"\n"
    )


def _files_of(entry: RawEntry, zero_oid: str) -> list[FileDiff]:
    """The files git prints patches for: a type change is a deletion and an addition."""
    if entry.status == "T":
        return [
            FileDiff(
                entry.from_path,
                entry.from_path,
                entry.from_id,
                zero_oid,
                entry.old_mode,
                0,
                source=entry,
            ),
            FileDiff(
                entry.from_path,
                entry.from_path,
                zero_oid,
                entry.to_id,
                0,
                entry.new_mode,
                source=entry,
            ),
        ]
    return [
        FileDiff(
            entry.from_path,
            entry.to_path,
            entry.from_id,
            entry.to_id,
            entry.old_mode,
            entry.new_mode,
            source=entry,
        )
    ]


@dataclass(slots=True)
class _PatchState:
    """What is known about the patch being read."""

    lines: int = 0  # content lines (not hunk headers)
    size: int = 0  # bytes of content lines
    patch_size: int = 0  # bytes the patch would have, hunk headers included
    in_hunks: bool = False
    dropped: bool = False  # certain not to be sent: stop holding it
    pieces: list[bytes] = field(default_factory=list)


class CommitDiffParser:
    """Turns `git diff --raw --patch -z` output into `PatchChunk`s and `FileDiff`s."""

    def __init__(self, stream: asyncio.StreamReader, limits: DiffLimits) -> None:
        self._reader = LineReader(stream)
        self._limits = limits.bounded()
        self._files = 0
        self._lines = 0
        self._bytes = 0
        self._stop_collecting = False
        self.overflowed = False  # the diff was cut: git's remaining output is unread

    async def diffs(self) -> AsyncGenerator[PatchChunk | FileDiff, None]:
        entries = [entry async for entry in read_raw_entries(self._reader)]
        zero_oid = "0" * len(entries[0].from_id) if entries else ""
        pending_header: bytes | None = None
        for entry in entries:
            for diff in _files_of(entry, zero_oid):
                self._files += 1
                if pending_header is None:
                    pending_header = await self._next_header()
                if pending_header != diff_header(diff.from_path, diff.to_path):
                    # git printed no patch for this file (whitespace-only change).
                    yield diff
                    continue
                pending_header = None
                async for item in self._read_patch(diff):
                    yield item
                if self.overflowed:
                    return
        if pending_header is not None or not await self._reader.at_end():
            raise DiffParseError(
                "git printed a patch for a file that is not in its list of changes"
            )

    async def _next_header(self) -> bytes | None:
        while not await self._reader.at_end():
            line = await self._reader.read_line()
            if line.startswith(b"diff --git "):
                return line
        return None

    async def _read_patch(self, diff: FileDiff) -> AsyncIterator[PatchChunk | FileDiff]:
        limits = self._limits
        state = _PatchState()
        stream = not limits.can_drop_patches
        max_patch_bytes = limits.max_patch_bytes_for(diff.to_path)
        while True:
            start = await self._reader.peek(10)
            if not start or start.startswith(b"diff --git"):
                break
            counted: bool
            if start.startswith((b"---", b"+++")) and not state.in_hunks:
                await self._reader.skip_line()
                continue
            if start.startswith(b"@@"):
                state.in_hunks = True
                counted = False
            elif start.startswith(b"Binary"):
                diff.binary = True
                counted = True
            elif start.startswith((b"-", b"+", b" ", b"\\", b"~\n")):
                counted = True
            else:
                await self._reader.skip_line()
                continue
            if counted:
                state.lines += 1
            async for piece in self._reader.line_pieces():
                if counted:
                    state.size += len(piece)
                if self._stop_collecting:
                    continue
                state.patch_size += len(piece)
                if stream:
                    yield PatchChunk(diff, piece)
                    continue
                if not state.dropped:
                    state.dropped = self._certain_to_drop(state, max_patch_bytes)
                    if state.dropped:
                        state.pieces.clear()
                    else:
                        state.pieces.append(piece)
        yield self._finish(diff, state, max_patch_bytes)

    def _over_safe_limits(self, lines: int, size: int) -> bool:
        limits = self._limits
        return (
            self._files > limits.safe_max_files
            or lines > limits.safe_max_lines
            or size > limits.safe_max_bytes
        )

    def _over_max_limits(self, lines: int, size: int) -> bool:
        limits = self._limits
        return (
            self._files > limits.max_files or lines >= limits.max_lines or size >= limits.max_bytes
        )

    def _certain_to_drop(self, state: _PatchState, max_patch_bytes: int) -> bool:
        """Whether the patch read so far can no longer be sent, whatever follows:
        every count only grows, and each of these ends in collapsed, too_large
        or an overflow marker, all of which send no patch."""
        lines, size = self._lines + state.lines, self._bytes + state.size
        if self._limits.collapse_diffs and state.lines > 0 and self._over_safe_limits(lines, size):
            return True
        if self._limits.enforce_limits:
            return state.patch_size >= max_patch_bytes or self._over_max_limits(lines, size)
        return False

    def _finish(self, diff: FileDiff, state: _PatchState, max_patch_bytes: int) -> FileDiff:
        """Apply the limits to a file whose patch has been read, as Gitaly does."""
        limits = self._limits
        self._lines += state.lines
        self._bytes += state.size
        patch_size = state.patch_size
        pruned = False

        def prune() -> None:
            # A dropped patch no longer counts towards the limits.
            nonlocal patch_size, pruned
            if not pruned:
                self._lines -= state.lines
                self._bytes -= state.size
                pruned = True
            patch_size = 0

        if (
            limits.collapse_diffs
            and state.lines > 0
            and self._over_safe_limits(self._lines, self._bytes)
        ):
            prune()
            diff.collapsed = True
        keep_patch = not pruned
        if limits.enforce_limits:
            if patch_size >= max_patch_bytes:
                prune()
                diff.too_large = True
                keep_patch = False
            if self._over_max_limits(self._lines, self._bytes):
                if not limits.collect_all_paths:
                    self.overflowed = True
                    return FileDiff(overflow_marker=True, source=diff.source)
                # Go on listing the files, without patches.
                self._stop_collecting = True
                diff.overflow_marker = True
                keep_patch = False
        if keep_patch and limits.can_drop_patches:
            if state.dropped:
                raise DiffParseError("internal error: a patch was dropped that had to be sent")
            diff.patch = b"".join(state.pieces)
        return diff


@dataclass(frozen=True, slots=True)
class NumStat:
    path: bytes
    additions: int
    deletions: int
    old_path: bytes = b""


async def read_numstats(stream: asyncio.StreamReader) -> AsyncIterator[NumStat]:
    """Entries of `git diff --numstat -z`; binary files (`-`) count 0 and 0."""
    reader = LineReader(stream)
    while True:
        token = await reader.read_token()
        if token is None:
            return
        fields = token.split(b"\t", 2)
        if len(fields) != 3:
            raise DiffParseError(f"unexpected numstat line {token!r}")
        try:
            additions, deletions = (0 if value == b"-" else int(value) for value in fields[:2])
        except ValueError:
            raise DiffParseError(f"unexpected numstat line {token!r}") from None
        if fields[2]:
            yield NumStat(fields[2], additions, deletions)
            continue
        old_path, new_path = await reader.read_token(), await reader.read_token()
        if old_path is None or new_path is None:
            raise DiffParseError("numstat output ends inside a rename")
        yield NumStat(new_path, additions, deletions, old_path)
