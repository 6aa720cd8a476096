"""Helpers for OperationService tests: repositories on disk, request builders,
and reading what git actually stored."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from praefect.protos.gitaly import operations_pb2, operations_pb2_grpc, shared_pb2
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.gitenv import git, git_env, make_work_repo
from tests.support.grpc_client import auth

Action = operations_pb2.UserCommitFilesActionHeader
METADATA = auth(NODE_TOKEN)
USER = shared_pb2.User(
    gl_id="user-42",
    name=b"Jane Doe",
    email=b"jane@example.com",
    gl_username="jane",
    timezone="Europe/Paris",
)
# 2023-11-14T22:13:20Z: Paris is at +0100 then.
FIXED_TIME = Timestamp(seconds=1_700_000_000)


def storage_dir(tmp_path: Path) -> Path:
    """The directory of the `node` fixture's storage."""
    return tmp_path / "storage"


def repository(relative_path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=STORAGE, relative_path=relative_path)


def init_bare(tmp_path: Path, relative_path: str, head_branch: str = "main") -> Path:
    """An empty bare repository in the node's storage, HEAD naming `head_branch`."""
    path = storage_dir(tmp_path) / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    git(["init", "-q", "--bare", "-b", head_branch, str(path)])
    return path


def clone_bare(tmp_path: Path, relative_path: str, commits: int = 3) -> Path:
    """A bare repository in the node's storage with `commits` commits on main."""
    work = make_work_repo(tmp_path / f"work-{relative_path.replace('/', '-')}", commits)
    path = storage_dir(tmp_path) / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    git(["clone", "-q", "--bare", str(work), str(path)])
    return path


def stub(channel: aio.Channel) -> operations_pb2_grpc.OperationServiceStub:
    return operations_pb2_grpc.OperationServiceStub(channel)


# Reading the repository with git itself.


def rev_parse(git_dir: Path, revision: str) -> str | None:
    out = git(
        ["--git-dir", str(git_dir), "rev-parse", "--verify", "--quiet", revision], check=False
    )
    return out.strip() or None


def ref_exists(git_dir: Path, ref: str) -> bool:
    out = git(["--git-dir", str(git_dir), "show-ref", "--verify", ref], check=False)
    return bool(out.strip())


def head_target(git_dir: Path) -> str:
    return git(["--git-dir", str(git_dir), "symbolic-ref", "HEAD"]).strip()


def history(git_dir: Path, revision: str) -> list[str]:
    return git(["--git-dir", str(git_dir), "rev-list", revision]).split()


def parents(git_dir: Path, commit: str) -> list[str]:
    return git(["--git-dir", str(git_dir), "rev-list", "--parents", "-n1", commit]).split()[1:]


def git_bytes(git_dir: Path, *args: str) -> bytes:
    """git's raw output (contents need not be UTF-8)."""
    result = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], env=git_env(), capture_output=True, timeout=60
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr.decode(errors='replace')}"
    return result.stdout


def cat(git_dir: Path, revision: str) -> bytes:
    return git_bytes(git_dir, "cat-file", "-p", revision)


@dataclass(frozen=True)
class FileInTree:
    mode: str
    content: bytes


def tree_files(git_dir: Path, revision: str) -> dict[str, FileInTree]:
    """Every file of `revision`'s tree with its mode and content."""
    listing = git(["--git-dir", str(git_dir), "ls-tree", "-r", "-z", revision])
    files: dict[str, FileInTree] = {}
    for record in filter(None, listing.split("\0")):
        info, path = record.split("\t", 1)
        mode, _kind, oid = info.split(" ")
        content = git_bytes(git_dir, "cat-file", "blob", oid)
        files[path] = FileInTree(mode, content)
    return files


# Building UserCommitFiles streams.


def header(
    relative_path: str,
    branch: str = "main",
    message: bytes = b"Add files",
    **fields: Any,
) -> operations_pb2.UserCommitFilesRequest:
    values: dict[str, Any] = {
        "repository": repository(relative_path),
        "user": USER,
        "branch_name": branch.encode(),
        "commit_message": message,
    }
    values.update(fields)
    return operations_pb2.UserCommitFilesRequest(
        header=operations_pb2.UserCommitFilesRequestHeader(**values)
    )


def action(
    kind: operations_pb2.UserCommitFilesActionHeader.ActionType.ValueType,
    path: str,
    *chunks: bytes,
    **fields: Any,
) -> list[operations_pb2.UserCommitFilesRequest]:
    """An action header followed by one message per content chunk."""
    action_header = Action(action=kind, file_path=path.encode(), **fields)
    messages = [
        operations_pb2.UserCommitFilesRequest(
            action=operations_pb2.UserCommitFilesAction(header=action_header)
        )
    ]
    messages += [
        operations_pb2.UserCommitFilesRequest(
            action=operations_pb2.UserCommitFilesAction(content=chunk)
        )
        for chunk in chunks
    ]
    return messages


def create(path: str, *chunks: bytes, **fields: Any) -> list[operations_pb2.UserCommitFilesRequest]:
    return action(Action.CREATE, path, *chunks, **fields)


def update(path: str, *chunks: bytes, **fields: Any) -> list[operations_pb2.UserCommitFilesRequest]:
    return action(Action.UPDATE, path, *chunks, **fields)


def delete(path: str) -> list[operations_pb2.UserCommitFilesRequest]:
    return action(Action.DELETE, path)


def move(
    previous: str, path: str, *chunks: bytes, infer: bool = False
) -> list[operations_pb2.UserCommitFilesRequest]:
    return action(Action.MOVE, path, *chunks, previous_path=previous.encode(), infer_content=infer)


def chmod(path: str, executable: bool) -> list[operations_pb2.UserCommitFilesRequest]:
    return action(Action.CHMOD, path, execute_filemode=executable)


def create_dir(path: str) -> list[operations_pb2.UserCommitFilesRequest]:
    return action(Action.CREATE_DIR, path)


def stream(
    first: operations_pb2.UserCommitFilesRequest,
    *actions: Sequence[operations_pb2.UserCommitFilesRequest],
) -> list[operations_pb2.UserCommitFilesRequest]:
    return [first, *(message for group in actions for message in group)]


async def commit_files(
    channel: aio.Channel, requests: Sequence[operations_pb2.UserCommitFilesRequest]
) -> operations_pb2.UserCommitFilesResponse:
    response: operations_pb2.UserCommitFilesResponse = await stub(channel).UserCommitFiles(
        iter(requests), metadata=METADATA
    )
    return response
