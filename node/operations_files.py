"""The action part of a UserCommitFiles stream: receiving, storing, applying.

After the header, a client sends for each action an action header followed
by any number of content chunks. Content is written to files in the call's
scratch directory as it arrives (never held whole in memory), base64 being
decoded on the way, and all blobs are then written by one
`git hash-object --stdin-paths` process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from praefect.node.errors import InvalidArgument
from praefect.node.git import run_git
from praefect.node.operations_tree import TreeEditor, validate_file_path
from praefect.protos.gitaly import operations_pb2

ActionType = operations_pb2.UserCommitFilesActionHeader
_ACTION_NAMES = {
    ActionType.CREATE: "CREATE",
    ActionType.CREATE_DIR: "CREATE_DIR",
    ActionType.UPDATE: "UPDATE",
    ActionType.MOVE: "MOVE",
    ActionType.DELETE: "DELETE",
    ActionType.CHMOD: "CHMOD",
}


@dataclass(slots=True)
class ReceivedAction:
    """One action with where its content went (when it has any)."""

    header: operations_pb2.UserCommitFilesActionHeader
    content_path: Path | None
    oid: str = ""
    decoder: _Base64Stream | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return _ACTION_NAMES[self.header.action]

    @property
    def shown_path(self) -> str:
        return self.header.file_path.decode(errors="replace")


def _takes_content(header: operations_pb2.UserCommitFilesActionHeader) -> bool:
    if header.action in (ActionType.CREATE, ActionType.UPDATE):
        return True
    return header.action == ActionType.MOVE and not header.infer_content


class _Base64Stream:
    """Decodes base64 arriving in chunks cut anywhere; line breaks are ignored
    as Go's decoder (Gitaly's) ignores them."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data.translate(None, b"\r\n")
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        return base64.b64decode(data[:usable], validate=True)

    def finish(self) -> None:
        if self._pending:
            raise binascii.Error("truncated base64 content")


class ActionReceiver:
    """Reads the actions of a UserCommitFiles stream into a scratch directory."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.actions: list[ReceivedAction] = []
        self._output: BinaryIO | None = None

    async def receive(
        self, requests: AsyncIterator[operations_pb2.UserCommitFilesRequest]
    ) -> list[ReceivedAction]:
        try:
            async for request in requests:
                await self._handle(request)
            await self._finish_current()
        finally:
            if self._output is not None:
                await asyncio.to_thread(self._output.close)
                self._output = None
        return self.actions

    async def _handle(self, request: operations_pb2.UserCommitFilesRequest) -> None:
        if request.WhichOneof("user_commit_files_request_payload") != "action":
            raise InvalidArgument(
                "UserCommitFiles: only the first message may carry the header; "
                "every later message must be an action"
            )
        payload = request.action.WhichOneof("user_commit_files_action_payload")
        if payload == "header":
            await self._finish_current()
            self._start(request.action.header)
        elif payload == "content":
            await self._write_content(request.action.content)
        else:
            raise InvalidArgument(
                "UserCommitFiles: an action message must carry a header or content"
            )

    def _start(self, header: operations_pb2.UserCommitFilesActionHeader) -> None:
        if header.action not in _ACTION_NAMES:
            raise InvalidArgument(f"UserCommitFiles: unknown action type {header.action}")
        validate_file_path(header.file_path)
        if header.action == ActionType.MOVE:
            validate_file_path(header.previous_path, what="previous_path")
        content_path = None
        if _takes_content(header):
            content_path = self.scratch / f"content-{len(self.actions)}"
            # Opening an empty local file is quick; content writes go to a thread.
            self._output = content_path.open("wb")
        decoder = _Base64Stream() if header.base64_content else None
        self.actions.append(ReceivedAction(header, content_path, decoder=decoder))

    async def _write_content(self, data: bytes) -> None:
        if not self.actions:
            raise InvalidArgument("UserCommitFiles: content sent before any action header")
        action = self.actions[-1]
        if self._output is None or not data:
            return  # actions without content (DELETE, CHMOD, ...) ignore it, as Gitaly does
        if action.decoder is not None:
            try:
                data = action.decoder.feed(data)
            except (binascii.Error, ValueError):
                raise _invalid_base64(action) from None
        await asyncio.to_thread(self._output.write, data)

    async def _finish_current(self) -> None:
        if not self.actions or self._output is None:
            return
        output, self._output = self._output, None
        await asyncio.to_thread(output.close)
        action = self.actions[-1]
        if action.decoder is not None:
            try:
                action.decoder.finish()
            except binascii.Error:
                raise _invalid_base64(action) from None


def _invalid_base64(action: ReceivedAction) -> InvalidArgument:
    return InvalidArgument(
        f"invalid base64 content for {action.name} {action.shown_path!r}: "
        "send valid base64 or set base64_content to false"
    )


async def write_blobs(git_dir: Path, actions: list[ReceivedAction], scratch: Path) -> str:
    """Write every action's content as a blob (filling `oid`) and return the
    id of the empty blob (for CREATE_DIR's .gitkeep), in one git process."""
    empty = scratch / "empty"
    await asyncio.to_thread(empty.write_bytes, b"")
    with_content = [action for action in actions if action.content_path is not None]
    paths = [str(action.content_path) for action in with_content] + [str(empty)]
    result = await run_git(
        ["hash-object", "-w", "--no-filters", "--stdin-paths"],
        git_dir=git_dir,
        stdin="".join(f"{path}\n" for path in paths).encode(),
    )
    oids = result.stdout.decode().split()
    if len(oids) != len(paths):
        raise RuntimeError(f"git hash-object returned {len(oids)} ids for {len(paths)} files")
    for action, oid in zip(with_content, oids, strict=False):
        action.oid = oid
    return oids[-1]


def apply_actions(editor: TreeEditor, actions: list[ReceivedAction], empty_blob: str) -> None:
    """Apply the actions in order; raises IndexUpdateError at the first that does not fit."""
    for action in actions:
        header = action.header
        path = header.file_path
        if header.action == ActionType.CREATE:
            editor.create(path, action.oid, executable=header.execute_filemode)
        elif header.action == ActionType.CREATE_DIR:
            editor.create_directory(path, empty_blob)
        elif header.action == ActionType.UPDATE:
            editor.update(path, action.oid)
        elif header.action == ActionType.MOVE:
            editor.move(header.previous_path, path, None if header.infer_content else action.oid)
        elif header.action == ActionType.DELETE:
            editor.delete(path)
        elif header.action == ActionType.CHMOD:
            editor.chmod(path, executable=header.execute_filemode)
