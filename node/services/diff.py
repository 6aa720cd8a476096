"""The node's DiffService: CommitDiff, RawDiff and DiffStats over `git diff`.

As in Gitaly, both commit ids are required, a revision that git could read
as an option is refused, and a `git diff` that fails (an unknown commit)
gives FAILED_PRECONDITION with git's message. Paths of CommitDiff are
literal paths (`--literal-pathspecs`), not pathspec patterns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from grpc import aio

from praefect.node.context import NodeContext
from praefect.node.diffparse import (
    CommitDiffParser,
    DiffLimits,
    DiffParseError,
    FileDiff,
    LineReader,
    PatchChunk,
    RawEntry,
    read_numstats,
    read_raw_entries,
)
from praefect.node.errors import FailedPrecondition, Internal, InvalidArgument
from praefect.node.git import kill_and_reap, read_chunks, spawn_git, validate_revision
from praefect.node.repository_args import locate_repository
from praefect.node.services.base import NodeServicer, rpc
from praefect.protos.gitaly import diff_pb2, diff_pb2_grpc

# Gitaly's msgSizeThreshold: patches are split into messages of this size.
PATCH_MESSAGE_SIZE = 5 * 1024
RAW_DIFF_CHUNK_SIZE = 128 * 1024
# Gitaly's maxNumStatBatchSize: DiffStats entries per message.
DIFF_STATS_BATCH_SIZE = 1000
RENAME_THRESHOLD = "--find-renames=30%"

# Output that does not depend on the repository's or the user's diff settings.
_DIFF_CONFIG = (
    "-c", "diff.noprefix=false",
    "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.suppressBlankEmpty=false",
    "-c", "core.quotePath=true",
)  # fmt: skip
_DIFF_OUTPUT_FLAGS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--submodule=short",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)

_WHITESPACE_FLAGS = {
    diff_pb2.CommitDiffRequest.WHITESPACE_CHANGES_IGNORE: "--ignore-space-change",
    diff_pb2.CommitDiffRequest.WHITESPACE_CHANGES_IGNORE_ALL: "--ignore-all-space",
}


def _commit_ids(left: str, right: str) -> tuple[str, str]:
    if not left:
        raise InvalidArgument("empty left_commit_id: give the commit to diff from")
    if not right:
        raise InvalidArgument("empty right_commit_id: give the commit to diff to")
    left = validate_revision(left, what="left_commit_id")
    return left, validate_revision(right, what="right_commit_id")


def _literal_paths(paths: Sequence[bytes]) -> list[str]:
    result = []
    for path in paths:
        if not path:
            raise InvalidArgument("empty path in paths: give paths relative to the repository root")
        if b"\0" in path:
            raise InvalidArgument(f"path {path!r} contains a NUL byte")
        result.append(os.fsdecode(path))
    return result


def _limits(request: diff_pb2.CommitDiffRequest) -> DiffLimits:
    enforce = request.enforce_limits
    return DiffLimits(
        # As in Gitaly, the hard limits apply only with enforce_limits.
        enforce_limits=enforce,
        max_files=request.max_files if enforce else 0,
        max_lines=request.max_lines if enforce else 0,
        max_bytes=request.max_bytes if enforce else 0,
        max_patch_bytes=request.max_patch_bytes if enforce else 0,
        max_patch_bytes_for_file_extension=(
            {entry.key: entry.value for entry in request.max_patch_bytes_for_file_extension}
            if enforce
            else {}
        ),
        collapse_diffs=request.collapse_diffs,
        safe_max_files=request.safe_max_files,
        safe_max_lines=request.safe_max_lines,
        safe_max_bytes=request.safe_max_bytes,
        collect_all_paths=request.collect_all_paths,
    )


def _entry_key(entry: RawEntry) -> tuple[bytes, str, str]:
    return entry.to_path, entry.from_id, entry.to_id


class _PatchMessages:
    """The messages of one file: metadata on the first, the patch cut into
    PATCH_MESSAGE_SIZE pieces, end_of_patch on the last (Gitaly's split)."""

    def __init__(self, diff: FileDiff) -> None:
        self._diff = diff
        self._pending = bytearray()
        self._first = True

    def add(self, data: bytes) -> list[diff_pb2.CommitDiffResponse]:
        self._pending += data
        messages = []
        # Keep at least one byte back: the last message carries end_of_patch.
        while len(self._pending) > PATCH_MESSAGE_SIZE:
            messages.append(self._message(bytes(self._pending[:PATCH_MESSAGE_SIZE]), end=False))
            del self._pending[:PATCH_MESSAGE_SIZE]
        return messages

    def finish(self, diff: FileDiff) -> list[diff_pb2.CommitDiffResponse]:
        self._diff = diff
        messages = self.add(diff.patch)
        messages.append(self._message(bytes(self._pending), end=True))
        self._pending.clear()
        return messages

    def _message(self, data: bytes, *, end: bool) -> diff_pb2.CommitDiffResponse:
        message = diff_pb2.CommitDiffResponse(raw_patch_data=data, end_of_patch=end)
        if self._first:
            self._first = False
            diff = self._diff
            message.from_path = diff.from_path
            message.to_path = diff.to_path
            message.from_id = diff.from_id
            message.to_id = diff.to_id
            message.old_mode = diff.old_mode
            message.new_mode = diff.new_mode
            message.binary = diff.binary
            message.overflow_marker = diff.overflow_marker
            message.collapsed = diff.collapsed
            message.too_large = diff.too_large
        return message


def _git_failure(stderr: bytes, command: str) -> FailedPrecondition:
    text = stderr.decode(errors="replace").strip()
    return FailedPrecondition(f"git {command} failed: {text}")


async def _whitespace_manifest(
    git_dir: Path, left: str, right: str, paths: Sequence[str]
) -> dict[tuple[bytes, str, str], RawEntry]:
    """Every changed file, whitespace or not (git diff-tree ignores -b/-w).

    Newer git leaves whitespace-only files out of `--raw` when whitespace is
    ignored; Gitaly still lists them with an empty patch, and so do we.
    """
    args = [
        "--literal-pathspecs", "diff-tree", "-r", "-z", "--no-abbrev", RENAME_THRESHOLD,
        "--end-of-options", left, right, "--", *paths,
    ]  # fmt: skip
    async with spawn_git(args, git_dir=git_dir) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            manifest = {
                _entry_key(entry): entry
                async for entry in read_raw_entries(LineReader(process.stdout))
            }
            stderr = await process.stderr.read()
            if await process.wait() != 0:
                raise _git_failure(stderr, "diff-tree")
        except DiffParseError as error:
            raise Internal(f"cannot read git diff-tree's output: {error}") from error
        finally:
            await kill_and_reap(process)
    return manifest


class DiffServicer(NodeServicer, diff_pb2_grpc.DiffServiceServicer):
    @rpc
    async def CommitDiff(
        self, request: diff_pb2.CommitDiffRequest, context: aio.ServicerContext
    ) -> AsyncIterator[diff_pb2.CommitDiffResponse]:
        location = locate_repository(
            self.ctx, request.repository if request.HasField("repository") else None
        )
        left, right = _commit_ids(request.left_commit_id, request.right_commit_id)
        paths = _literal_paths(request.paths)
        flags = [
            "--patch",
            "--raw",
            "-z",
            "--no-abbrev",
            "--full-index",
            RENAME_THRESHOLD,
            *_DIFF_OUTPUT_FLAGS,
        ]
        if request.diff_mode == diff_pb2.CommitDiffRequest.WORDDIFF:
            flags.append("--word-diff=porcelain")
        whitespace_flag = _WHITESPACE_FLAGS.get(request.whitespace_changes)
        manifest: dict[tuple[bytes, str, str], RawEntry] = {}
        if whitespace_flag is not None:
            flags.append(whitespace_flag)
            manifest = await _whitespace_manifest(location.path, left, right, paths)
        args = [
            "--literal-pathspecs",
            *_DIFF_CONFIG,
            "diff",
            *flags,
            "--end-of-options",
            left,
            right,
            "--",
            *paths,
        ]
        async with spawn_git(args, git_dir=location.path) as process:
            assert process.stdout is not None and process.stderr is not None
            parser = CommitDiffParser(process.stdout, _limits(request))
            current: _PatchMessages | None = None
            try:
                async with contextlib.aclosing(parser.diffs()) as diffs:
                    async for item in diffs:
                        if current is None:
                            current = _PatchMessages(
                                item.diff if isinstance(item, PatchChunk) else item
                            )
                        if isinstance(item, PatchChunk):
                            for message in current.add(item.data):
                                yield message
                            continue
                        for message in current.finish(item):
                            yield message
                        current = None
                        if item.source is not None:
                            manifest.pop(_entry_key(item.source), None)
                if parser.overflowed:
                    return  # the rest of git's output is not needed
                stderr = await process.stderr.read()
                if await process.wait() != 0:
                    raise _git_failure(stderr, "diff")
            except DiffParseError as error:
                raise Internal(f"cannot read git diff's output: {error}") from error
            finally:
                await kill_and_reap(process)
        for entry in manifest.values():
            # Whitespace-only changes git left out: listed with an empty patch.
            yield diff_pb2.CommitDiffResponse(
                from_path=entry.from_path,
                to_path=entry.to_path,
                from_id=entry.from_id,
                to_id=entry.to_id,
                old_mode=entry.old_mode,
                new_mode=entry.new_mode,
                end_of_patch=True,
            )

    @rpc
    async def RawDiff(
        self, request: diff_pb2.RawDiffRequest, context: aio.ServicerContext
    ) -> AsyncIterator[diff_pb2.RawDiffResponse]:
        location = locate_repository(
            self.ctx, request.repository if request.HasField("repository") else None
        )
        left, right = _commit_ids(request.left_commit_id, request.right_commit_id)
        args = [
            "-c", "diff.noprefix=false", "diff", "--full-index", "--no-color", "--no-ext-diff",
            "--end-of-options", left, right,
        ]  # fmt: skip
        async with spawn_git(args, git_dir=location.path) as process:
            assert process.stdout is not None and process.stderr is not None
            try:
                async for chunk in read_chunks(process.stdout, RAW_DIFF_CHUNK_SIZE):
                    yield diff_pb2.RawDiffResponse(data=chunk)
                stderr = await process.stderr.read()
                if await process.wait() != 0:
                    raise _git_failure(stderr, "diff")
            finally:
                await kill_and_reap(process)

    @rpc
    async def DiffStats(
        self, request: diff_pb2.DiffStatsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[diff_pb2.DiffStatsResponse]:
        location = locate_repository(
            self.ctx, request.repository if request.HasField("repository") else None
        )
        left, right = _commit_ids(request.left_commit_id, request.right_commit_id)
        args = [
            "diff",
            "--numstat",
            "-z",
            "--find-renames",
            "--no-ext-diff",
            "--end-of-options",
            left,
            right,
        ]
        batch: list[diff_pb2.DiffStats] = []
        async with spawn_git(args, git_dir=location.path) as process:
            assert process.stdout is not None and process.stderr is not None
            try:
                async for stat in read_numstats(process.stdout):
                    batch.append(
                        diff_pb2.DiffStats(
                            path=stat.path,
                            additions=stat.additions,
                            deletions=stat.deletions,
                            old_path=stat.old_path,
                        )
                    )
                    if len(batch) >= DIFF_STATS_BATCH_SIZE:
                        yield diff_pb2.DiffStatsResponse(stats=batch)
                        batch = []
                stderr = await process.stderr.read()
                if await process.wait() != 0:
                    raise _git_failure(stderr, "diff")
            except DiffParseError as error:
                raise Internal(f"cannot read git diff's output: {error}") from error
            finally:
                await kill_and_reap(process)
        if batch:
            yield diff_pb2.DiffStatsResponse(stats=batch)


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
    diff_pb2_grpc.add_DiffServiceServicer_to_server(DiffServicer(ctx), server)
