"""Reading git objects into Gitaly messages: commits, tags and trees.

All reads go through `ObjectReader`, one long-lived `git cat-file --batch`
process per call that answers many object requests in turn, so listing a
hundred branches costs one process and not a hundred.

The parsing follows Gitaly (internal/git/catfile/parser.go) so that a client
sees the same fields it would get from Gitaly:

- a commit's `subject` is the first line of its message; `body` is the whole
  message cut at `MAX_MESSAGE_SIZE` (10 KiB) and `body_size` the full size;
- author/committer dates that do not parse become Go's maximum time, as in
  Gitaly; the timezone is kept as the raw bytes (`b"+0200"`);
- the signature type comes from the first line of a `gpgsig` header (commits)
  or of the `-----BEGIN` block at the end of a tag message;
- trailers are parsed by git itself (`%(trailers:unfold)`), with Gitaly's
  limits: at most 64 trailers, keys up to 128 and values up to 512 bytes;
- an annotated tag's message is returned without trailing newlines and cut at
  10 KiB (`message_size` is the size after removing the newlines).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from praefect.node.errors import InvalidArgument, NotFound
from praefect.node.git import run_git, spawn_git
from praefect.node.refs import is_valid_ref_name
from praefect.protos.gitaly import shared_pb2

# Gitaly's helper.MaxCommitOrTagMessageSize.
MAX_MESSAGE_SIZE = 10 * 1024

# Gitaly's trailerparser limits.
MAX_TRAILERS = 64
MAX_TRAILER_KEY_SIZE = 128
MAX_TRAILER_VALUE_SIZE = 512

# How long a finished cat-file may take to exit on EOF before it is killed.
READER_EXIT_TIMEOUT = 10.0

# Dates beyond 2^53 seconds or unparsable become Go's maximum time value,
# which is what Gitaly sends (see gitlab.com/gitlab-org/gitaly/issues/556).
_MAX_UNIX_COMMIT_DATE = 1 << 53
_FALLBACK_SECONDS = (1 << 63) - 62135596801

_SIGNATURE_TYPES: dict[bytes, shared_pb2.SignatureType.ValueType] = {
    b"-----BEGIN SIGNED MESSAGE-----": shared_pb2.X509,
    b"-----BEGIN PGP MESSAGE-----": shared_pb2.PGP,
    b"-----BEGIN PGP SIGNATURE-----": shared_pb2.PGP,
    b"-----BEGIN SSH SIGNATURE-----": shared_pb2.SSH,
}


@dataclass(frozen=True, slots=True)
class GitObject:
    oid: str
    type: str  # "commit", "tree", "blob" or "tag"
    data: bytes


@dataclass(frozen=True, slots=True)
class TreeItem:
    mode: int  # as git writes it, e.g. 0o100644, 0o40000, 0o160000
    name: bytes
    oid: str

    @property
    def type(self) -> str:
        """The object type the entry points at: "tree", "commit" (submodule) or "blob"."""
        if self.mode == 0o40000:
            return "tree"
        if self.mode == 0o160000:
            return "commit"
        return "blob"


class ObjectReader:
    """Requests objects one after the other from one `git cat-file --batch`.

    Safe to share between coroutines of one call: requests are serialised.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._lock = asyncio.Lock()

    async def read(self, revision: str) -> GitObject | None:
        """The object `revision` names, or None when it does not resolve."""
        if "\n" in revision or "\x00" in revision:
            raise InvalidArgument(f"invalid revision {revision!r}: contains a newline or NUL")
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        async with self._lock:
            stdin.write(revision.encode() + b"\n")
            await stdin.drain()
            header = await stdout.readline()
            if not header:
                raise OSError("git cat-file exited unexpectedly")
            fields = header.rstrip(b"\n").split(b" ")
            if len(fields) != 3:
                # "<rev> missing" or "<rev> ambiguous"
                return None
            oid, kind, size = fields[0].decode(), fields[1].decode(), int(fields[2])
            payload = await stdout.readexactly(size + 1)
        return GitObject(oid, kind, payload[:-1])

    async def read_commit(self, revision: str, *, peel: bool = True) -> shared_pb2.GitCommit | None:
        """The commit `revision` names; with `peel`, tags are followed to their commit."""
        obj = await self.read(f"{revision}^{{commit}}" if peel else revision)
        if obj is None or obj.type != "commit":
            return None
        return parse_commit(obj.oid, obj.data)

    async def read_tree(self, revision: str) -> tuple[str, list[TreeItem]] | None:
        """The tree `revision` names (a tree, or `rev:path`), as (tree id, entries)."""
        obj = await self.read(revision)
        if obj is None or obj.type != "tree":
            return None
        return obj.oid, parse_tree(obj.data, hash_size=len(obj.oid) // 2)

    async def read_tag(self, tag_name: str) -> shared_pb2.Tag | None:
        obj = await self.read(f"refs/tags/{tag_name}")
        if obj is None:
            return None
        return await self.tag_from_object(tag_name.encode(), obj)

    async def tag_from_object(self, name: bytes, obj: GitObject) -> shared_pb2.Tag:
        """Build the Tag message for the object a tag ref points at."""
        if obj.type == "commit":
            return shared_pb2.Tag(
                name=name, id=obj.oid, target_commit=parse_commit(obj.oid, obj.data)
            )
        if obj.type != "tag":
            return shared_pb2.Tag(name=name, id=obj.oid)
        tag = parse_tag(obj.oid, obj.data, name=name)
        target_oid, target_type = parse_tag_target(obj.data)
        if target_type == "commit":
            target = await self.read_commit(target_oid, peel=False)
        elif target_type == "tag":
            # Nested tags: follow them to the innermost object.
            peeled = await self.read(f"{target_oid}^{{}}")
            target = (
                parse_commit(peeled.oid, peeled.data)
                if peeled and peeled.type == "commit"
                else None
            )
        else:
            target = None
        if target is not None:
            tag.target_commit.CopyFrom(target)
        trim_tag_message(tag)
        return tag


@contextlib.asynccontextmanager
async def open_object_reader(git_dir: Path) -> AsyncIterator[ObjectReader]:
    """Start `git cat-file --batch` for `git_dir`; it is killed and reaped on exit."""
    async with spawn_git(["cat-file", "--batch"], git_dir=git_dir, stdin=True) as process:
        yield ObjectReader(process)
        # Done without error: let cat-file end on EOF and reap it, rather than
        # kill a process that may be exiting already. On errors and
        # cancellation spawn_git kills it.
        assert process.stdin is not None
        process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), READER_EXIT_TIMEOUT)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    oid: str
    type: str
    size: int


# Below this many unread bytes an object stream is drained rather than its
# process killed: cat-file has likely written everything and exited already.
_DRAIN_LIMIT = 256 * 1024


class ObjectStream:
    """One object's header and content, read in chunks (never all in memory)."""

    def __init__(self, info: ObjectInfo, stdout: asyncio.StreamReader) -> None:
        self.info = info
        self._stdout = stdout
        self.remaining = info.size

    async def chunks(self, limit: int = -1, *, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """The content's first `limit` bytes (all of it when `limit` < 0)."""
        wanted = self.remaining if limit < 0 else min(limit, self.remaining)
        while wanted > 0:
            chunk = await self._stdout.read(min(chunk_size, wanted))
            if not chunk:
                raise OSError("git cat-file ended before the object's end")
            wanted -= len(chunk)
            self.remaining -= len(chunk)
            yield chunk


@contextlib.asynccontextmanager
async def open_object_stream(git_dir: Path, revision: str) -> AsyncIterator[ObjectStream | None]:
    """Stream the object `revision` names (None when it does not resolve)."""
    if "\n" in revision or "\x00" in revision:
        raise InvalidArgument(f"invalid revision {revision!r}: contains a newline or NUL")
    async with spawn_git(["cat-file", "--batch"], git_dir=git_dir, stdin=True) as process:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(revision.encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()
        fields = (await process.stdout.readline()).rstrip(b"\n").split(b" ")
        if len(fields) != 3:
            yield None
            await process.wait()
            return
        info = ObjectInfo(fields[0].decode(), fields[1].decode(), int(fields[2]))
        stream = ObjectStream(info, process.stdout)
        yield stream
        if stream.remaining <= _DRAIN_LIMIT:
            await process.stdout.read()  # the rest and cat-file's final newline
            await process.wait()


async def read_commit(
    git_dir: Path, revision: str, *, trailers: bool = False
) -> shared_pb2.GitCommit | None:
    """The commit `revision` resolves to (tags are peeled), or None.

    The caller validates `revision` (it is never given to git as an argument,
    only on cat-file's standard input, so it cannot act as an option).
    """
    async with open_object_reader(git_dir) as reader:
        commit = await reader.read_commit(revision)
    if commit is not None and trailers:
        await add_trailers(git_dir, [commit])
    return commit


async def read_commits(
    git_dir: Path, oids: Sequence[str], *, trailers: bool = False
) -> list[shared_pb2.GitCommit]:
    """The commits `oids` name, in the same order, read by one cat-file process.

    Raises NotFound when one of them is not a commit of the repository.
    """
    commits: list[shared_pb2.GitCommit] = []
    async with open_object_reader(git_dir) as reader:
        for oid in oids:
            commit = await reader.read_commit(oid)
            if commit is None:
                raise NotFound(f"commit {oid} not found")
            commits.append(commit)
    if trailers:
        await add_trailers(git_dir, commits)
    return commits


async def read_tag(git_dir: Path, tag_name: str) -> shared_pb2.Tag | None:
    """The tag `refs/tags/<tag_name>`, or None when there is no such tag.

    Annotated: id is the tag object's id, with message, tagger, signature type
    and the (peeled) target commit. Lightweight: id is the commit's id and the
    target commit, no message.
    """
    if not is_valid_ref_name(f"refs/tags/{tag_name}"):
        raise InvalidArgument(f"invalid tag name {tag_name!r}")
    async with open_object_reader(git_dir) as reader:
        return await reader.read_tag(tag_name)


async def add_trailers(git_dir: Path, commits: Sequence[shared_pb2.GitCommit]) -> None:
    """Fill in `trailers` of `commits`, parsed by git in one `git log` process."""
    if not commits:
        return
    found = await read_trailers(git_dir, [commit.id for commit in commits])
    for commit in commits:
        del commit.trailers[:]
        commit.trailers.extend(found.get(commit.id, []))


async def read_trailers(
    git_dir: Path, oids: Sequence[str]
) -> dict[str, list[shared_pb2.CommitTrailer]]:
    """Trailers of the commits `oids` (git interpret-trailers semantics)."""
    stdin = "".join(f"{oid}\n" for oid in oids).encode()
    args = [
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "--format=%x1e%H%x00%(trailers:unfold,separator=%x00)",
    ]
    result_of_log = await run_git(args, git_dir=git_dir, stdin=stdin)
    result: dict[str, list[shared_pb2.CommitTrailer]] = {}
    for record in result_of_log.stdout.split(b"\x1e")[1:]:
        oid, _, raw = record.rstrip(b"\n").partition(b"\x00")
        result[oid.decode()] = parse_trailers(raw)
    return result


def parse_trailers(raw: bytes) -> list[shared_pb2.CommitTrailer]:
    """`Key: value` items separated by NUL bytes, as git prints them."""
    trailers: list[shared_pb2.CommitTrailer] = []
    for item in raw.split(b"\x00"):
        if len(trailers) >= MAX_TRAILERS:
            break
        separator = item.find(b":")
        if separator <= 0:
            continue
        key, value = item[:separator], item[separator + 1 :].strip()
        if len(key) > MAX_TRAILER_KEY_SIZE or len(value) > MAX_TRAILER_VALUE_SIZE:
            continue
        trailers.append(shared_pb2.CommitTrailer(key=key, value=value))
    return trailers


def _header_lines(raw: bytes) -> tuple[list[bytes], bytes | None]:
    """Split an object into its header lines and its message (None without a blank line)."""
    lines: list[bytes] = []
    position = 0
    while position < len(raw):
        end = raw.find(b"\n", position)
        if end < 0:
            lines.append(raw[position:])
            return lines, None
        line = raw[position:end]
        position = end + 1
        if not line:
            return lines, raw[position:]
        lines.append(line)
    return lines, None


def parse_commit(oid: str, raw: bytes, *, trailers: bool = False) -> shared_pb2.GitCommit:
    """A commit object's bytes as a GitCommit.

    `trailers=True` parses `Key: value` lines of the message's last paragraph
    here, without git; `read_commit(..., trailers=True)` uses git's parser and
    is preferred (it knows git's rules for what counts as a trailer block).
    """
    commit = shared_pb2.GitCommit(id=oid)
    lines, message = _header_lines(raw)
    for line in lines:
        if line.startswith(b" "):
            continue  # continuation of a multi-line header (gpgsig, mergetag)
        key, separator, value = line.partition(b" ")
        if not separator:
            continue
        if key == b"parent":
            commit.parent_ids.append(value.decode())
        elif key == b"tree":
            commit.tree_id = value.decode()
        elif key == b"author":
            commit.author.CopyFrom(parse_commit_author(value))
        elif key == b"committer":
            commit.committer.CopyFrom(parse_commit_author(value))
        elif key in (b"gpgsig", b"gpgsig-sha256"):
            if commit.signature_type == shared_pb2.NONE:
                commit.signature_type = detect_signature_type(value)
        elif key == b"encoding":
            commit.encoding = value.decode(errors="replace")
    if message:
        commit.subject = message.split(b"\n", 1)[0].rstrip(b"\r\n")
        commit.body_size = len(message)
        commit.body = message[:MAX_MESSAGE_SIZE]
        if trailers:
            commit.trailers.extend(_trailers_of_last_paragraph(message))
    return commit


def _trailers_of_last_paragraph(message: bytes) -> list[shared_pb2.CommitTrailer]:
    paragraphs = [p for p in message.strip(b"\n").split(b"\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return []
    lines = paragraphs[-1].split(b"\n")
    if not all(b":" in line and not line.startswith(b" ") for line in lines):
        return []
    return parse_trailers(b"\x00".join(lines))


def parse_commit_author(value: bytes) -> shared_pb2.CommitAuthor:
    """`Name <email> 1700000000 +0200` as a CommitAuthor (Gitaly's parseCommitAuthor)."""
    author = shared_pb2.CommitAuthor()
    name, found, rest = value.partition(b"<")
    author.name = name.removesuffix(b" ")
    if not found:
        return author
    email, found, rest = rest.partition(b">")
    if not found:
        return author
    author.email = email
    fields = rest.split()
    if not fields:
        return author
    try:
        seconds = int(fields[0])
    except ValueError:
        seconds = _FALLBACK_SECONDS
    if seconds > _MAX_UNIX_COMMIT_DATE or seconds < 0:
        seconds = _FALLBACK_SECONDS
    author.date.CopyFrom(Timestamp(seconds=seconds))
    if len(fields) == 2:
        author.timezone = fields[1]
    return author


def detect_signature_type(first_line: bytes) -> shared_pb2.SignatureType.ValueType:
    return _SIGNATURE_TYPES.get(first_line.rstrip(b"\n"), shared_pb2.NONE)


def parse_tag(oid: str, raw: bytes, *, name: bytes = b"") -> shared_pb2.Tag:
    """An annotated tag object's bytes as a Tag, without its target commit.

    `name` is the tag's ref name without `refs/tags/` (it may differ from the
    name recorded in the object; the ref's name wins, as in Gitaly). The
    message is returned as stored; see `trim_tag_message`.
    """
    tag = shared_pb2.Tag(id=oid, name=name)
    lines, message = _header_lines(raw)
    for line in lines:
        key, separator, value = line.partition(b" ")
        if not separator:
            continue
        if key == b"tag" and not tag.name:
            tag.name = value
        elif key == b"tagger":
            tag.tagger.CopyFrom(parse_commit_author(value))
    if message is not None:
        tag.message = message
        tag.message_size = len(message)
        start = message.find(b"-----BEGIN")
        if start > 0:
            signature = message[start:].removesuffix(b"\n")
            first_line_end = signature.find(b"\n")
            if first_line_end > 0:
                tag.signature_type = detect_signature_type(signature[:first_line_end])
    return tag


def parse_tag_target(raw: bytes) -> tuple[str, str]:
    """(object id, object type) an annotated tag object points at."""
    oid = kind = ""
    lines, _ = _header_lines(raw)
    for line in lines:
        key, _, value = line.partition(b" ")
        if key == b"object":
            oid = value.decode()
        elif key == b"type":
            kind = value.decode()
    return oid, kind


def trim_tag_message(tag: shared_pb2.Tag) -> None:
    """Gitaly's TrimTagMessage: drop trailing newlines, then cut at 10 KiB."""
    tag.message = tag.message.rstrip(b"\n")
    tag.message_size = len(tag.message)
    if len(tag.message) > MAX_MESSAGE_SIZE:
        tag.message = tag.message[:MAX_MESSAGE_SIZE]


def parse_tree(raw: bytes, *, hash_size: int = 20) -> list[TreeItem]:
    """A tree object's bytes (`<octal mode> <name>\\0<binary id>`...) as entries."""
    items: list[TreeItem] = []
    position = 0
    while position < len(raw):
        space = raw.index(b" ", position)
        nul = raw.index(b"\x00", space)
        mode = int(raw[position:space], 8)
        name = raw[space + 1 : nul]
        oid = raw[nul + 1 : nul + 1 + hash_size].hex()
        items.append(TreeItem(mode, name, oid))
        position = nul + 1 + hash_size
    return items
