"""ReplicateRepository between two real node processes, and the gitaly-servers header."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.node.errors import InvalidArgument
from praefect.node.gitaly_servers import (
    GitalyServer,
    build_gitaly_servers,
    gitaly_servers_metadata,
    grpc_target,
    parse_gitaly_servers,
    server_from_metadata,
)
from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc, shared_pb2
from tests.support.bridge import NodeRemote, push
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.processes import ServerProcess, start_node

TOKEN_A, TOKEN_B = "token-of-a", "token-of-b"


# --- the header ------------------------------------------------------------


def test_header_round_trips_and_accepts_both_address_forms() -> None:
    servers = {
        "gitaly-1": GitalyServer("tcp://10.0.0.1:8075", "t1"),
        "gitaly-2": GitalyServer("10.0.0.2:8075", "t2"),
    }
    parsed = parse_gitaly_servers(build_gitaly_servers(servers))
    assert parsed == servers
    assert parsed["gitaly-1"].grpc_target == "10.0.0.1:8075"
    assert parsed["gitaly-2"].grpc_target == "10.0.0.2:8075"
    assert grpc_target("unix:/run/gitaly.sock") == "unix:/run/gitaly.sock"
    key, value = gitaly_servers_metadata(servers)
    assert key == "gitaly-servers"
    assert json.loads(base64.b64decode(value)) == {
        "gitaly-1": {"address": "tcp://10.0.0.1:8075", "token": "t1"},
        "gitaly-2": {"address": "10.0.0.2:8075", "token": "t2"},
    }
    assert "t1" not in repr(parsed["gitaly-1"])


def _b64(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "missing"),
        ("", "missing"),
        ("%%%not base64", "cannot decode"),
        (base64.b64encode(b"not json").decode(), "cannot decode"),
        (_b64([1, 2]), "object"),
        (_b64({}), "object"),
        (_b64({"s": "tcp://x:1"}), "not an object"),
        (_b64({"s": {"token": "t"}}), "no address"),
        (_b64({"s": {"address": "x:1"}}), "no token"),
        (_b64({"s": {"address": "https://x:1", "token": "t"}}), "scheme"),
        (_b64({"s": {"address": "x", "token": "t"}}), "host:port"),
    ],
)
def test_bad_headers_say_what_is_expected(value: str | None, text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_gitaly_servers(value)
    assert text in raised.value.message
    assert "base64 of a JSON object" in raised.value.message or text in ("scheme", "host:port")


def test_a_storage_missing_from_the_header_is_named() -> None:
    metadata = [gitaly_servers_metadata({"gitaly-1": GitalyServer("x:1", "t")})]
    with pytest.raises(InvalidArgument) as raised:
        server_from_metadata(metadata, "gitaly-9")
    assert "'gitaly-9'" in raised.value.message and "gitaly-1" in raised.value.message


# --- two node processes ----------------------------------------------------


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    root_a: Path
    root_b: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replication")
    a = start_node({"storage-a": root / "a"}, token=TOKEN_A)
    try:
        b = start_node({"storage-b": root / "b"}, token=TOKEN_B)
    except BaseException:
        a.stop()
        raise
    try:
        yield Cluster(a, b, root / "a", root / "b")
    finally:
        b.stop()
        a.stop()


Stubs = tuple[repository_pb2_grpc.RepositoryServiceStub, repository_pb2_grpc.RepositoryServiceStub]


@pytest.fixture
async def stubs(cluster: Cluster) -> AsyncIterator[Stubs]:
    async with aio.insecure_channel(cluster.a.address) as ch_a, aio.insecure_channel(cluster.b.address) as ch_b:
        yield repository_pb2_grpc.RepositoryServiceStub(ch_a), repository_pb2_grpc.RepositoryServiceStub(ch_b)


def on_a(path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name="storage-a", relative_path=path)


def on_b(path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name="storage-b", relative_path=path)


async def replicate(stub_b: repository_pb2_grpc.RepositoryServiceStub, cluster: Cluster, path: str, *, address: str | None = None) -> None:
    servers = {"storage-a": GitalyServer(address or f"tcp://{cluster.a.address}", TOKEN_A)}
    await stub_b.ReplicateRepository(
        pb.ReplicateRepositoryRequest(repository=on_b(path), source=on_a(path)),
        metadata=(*auth(TOKEN_B), gitaly_servers_metadata(servers)),
        timeout=30,
    )


async def checksums(stubs: Stubs, path: str) -> tuple[str, str]:
    stub_a, stub_b = stubs
    a = await stub_a.CalculateChecksum(pb.CalculateChecksumRequest(repository=on_a(path)), metadata=auth(TOKEN_A))
    b = await stub_b.CalculateChecksum(pb.CalculateChecksumRequest(repository=on_b(path)), metadata=auth(TOKEN_B))
    return a.checksum, b.checksum


def refs(path: Path) -> str:
    return git(["for-each-ref", "--format=%(objectname) %(refname)"], cwd=path)


def history_of(work: Path, commits: int) -> Path:
    """A work repository whose main has `commits` commits, each adding a file (one git call)."""
    git(["init", "-q", "-b", "main", str(work)])
    stream = []
    for i in range(commits):
        message, content = f"commit {i}\n", f"content {i}\n"
        stream.append(
            f"commit refs/heads/main\ncommitter T <t@example.com> {1_700_000_000 + i} +0000\n"
            f"data {len(message)}\n{message}M 644 inline file{i}.txt\ndata {len(content)}\n{content}\n"
        )
    git(["fast-import", "--quiet"], cwd=work, input="".join(stream).encode())
    git(["reset", "-q", "--hard", "main"], cwd=work)
    return work


def commit(work: Path, name: str) -> str:
    (work / f"{name}.txt").write_text(f"{name}\n")
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", name], cwd=work)
    return git(["rev-parse", "HEAD"], cwd=work).strip()


@pytest.mark.timeout(120)
async def test_replication_follows_the_source(cluster: Cluster, stubs: Stubs, tmp_path: Path) -> None:
    stub_a, stub_b = stubs
    path = "group/project.git"
    await stub_a.CreateRepository(pb.CreateRepositoryRequest(repository=on_a(path)), metadata=auth(TOKEN_A))
    remote = NodeRemote(cluster.a.address, "storage-a", path, TOKEN_A)
    work = make_work_repo(tmp_path / "work", commits=3)
    git(["branch", "doomed"], cwd=work)
    git(["tag", "-a", "-m", "release", "v1.0"], cwd=work)
    await push(remote, work, "main", "doomed", "v1.0")
    on_disk_b = cluster.root_b / path

    # Create: B has no copy yet.
    await replicate(stub_b, cluster, path)
    a_sum, b_sum = await checksums(stubs, path)
    assert a_sum == b_sum != "0" * 40
    assert refs(on_disk_b) == refs(cluster.root_a / path)
    git(["fsck", "--no-progress"], cwd=on_disk_b)

    # New commits, a deleted branch, a new tag.
    new_tip = commit(work, "second")
    await push(remote, work, "main", ":doomed")
    git(["tag", "v2.0"], cwd=work)
    await push(remote, work, "v2.0")
    await replicate(stub_b, cluster, path)
    assert git(["rev-parse", "refs/heads/main"], cwd=on_disk_b).strip() == new_tip
    assert "refs/heads/doomed" not in refs(on_disk_b)
    assert "refs/tags/v2.0" in refs(on_disk_b)
    assert git(["cat-file", "-t", "refs/tags/v1.0"], cwd=on_disk_b).strip() == "tag"
    assert len(set(await checksums(stubs, path))) == 1

    # A force-push rewrites main.
    git(["reset", "-q", "--hard", "HEAD~2"], cwd=work)
    rewritten = commit(work, "rewritten")
    await push(remote, work, "+main")
    await replicate(stub_b, cluster, path)
    assert git(["rev-parse", "refs/heads/main"], cwd=on_disk_b).strip() == rewritten
    assert len(set(await checksums(stubs, path))) == 1

    # The default branch moves on A.
    await push(remote, work, "main:refs/heads/stable")
    await stub_a.WriteRef(pb.WriteRefRequest(repository=on_a(path), ref=b"HEAD", revision=b"refs/heads/stable"), metadata=auth(TOKEN_A))
    await replicate(stub_b, cluster, path, address=cluster.a.address)
    assert git(["symbolic-ref", "HEAD"], cwd=on_disk_b).strip() == "refs/heads/stable"

    # Up to date: replicating again succeeds and changes nothing.
    objects_before = git(["count-objects", "-v"], cwd=on_disk_b)
    refs_before = refs(on_disk_b)
    await replicate(stub_b, cluster, path)
    assert git(["count-objects", "-v"], cwd=on_disk_b) == objects_before
    assert refs(on_disk_b) == refs_before
    assert len(set(await checksums(stubs, path))) == 1


async def test_sha256_repositories_replicate_with_their_default_branch(cluster: Cluster, stubs: Stubs, tmp_path: Path) -> None:
    stub_a, stub_b = stubs
    path = "empty-sha256.git"
    await stub_a.CreateRepository(
        pb.CreateRepositoryRequest(repository=on_a(path), default_branch=b"develop", object_format=shared_pb2.OBJECT_FORMAT_SHA256),
        metadata=auth(TOKEN_A),
    )

    await replicate(stub_b, cluster, path)

    fmt = await stub_b.ObjectFormat(pb.ObjectFormatRequest(repository=on_b(path)), metadata=auth(TOKEN_B))
    assert fmt.format == shared_pb2.OBJECT_FORMAT_SHA256
    assert git(["symbolic-ref", "HEAD"], cwd=cluster.root_b / path).strip() == "refs/heads/develop"
    assert await checksums(stubs, path) == ("0" * 40, "0" * 40)
    assert not list((cluster.root_b / "+praefect" / "tmp").iterdir())

    work = tmp_path / "work256"
    git(["init", "-q", "--object-format=sha256", "-b", "develop", str(work)])
    tip = commit(work, "first")
    await push(NodeRemote(cluster.a.address, "storage-a", path, TOKEN_A), work, "develop")
    await replicate(stub_b, cluster, path)
    assert git(["rev-parse", "refs/heads/develop"], cwd=cluster.root_b / path).strip() == tip
    assert len(tip) == 64
    assert len(set(await checksums(stubs, path))) == 1


async def test_a_deleted_source_removes_the_target(cluster: Cluster, stubs: Stubs, tmp_path: Path) -> None:
    stub_a, stub_b = stubs
    path = "deleted.git"
    await stub_a.CreateRepository(pb.CreateRepositoryRequest(repository=on_a(path)), metadata=auth(TOKEN_A))
    await replicate(stub_b, cluster, path)
    assert (cluster.root_b / path).is_dir()

    await stub_a.RemoveRepository(pb.RemoveRepositoryRequest(repository=on_a(path)), metadata=auth(TOKEN_A))
    await replicate(stub_b, cluster, path)

    assert not (cluster.root_b / path).exists()
    exists = await stub_b.RepositoryExists(pb.RepositoryExistsRequest(repository=on_b(path)), metadata=auth(TOKEN_B))
    assert not exists.exists
    await replicate(stub_b, cluster, path)  # nothing on either side: still fine


async def test_replication_errors(cluster: Cluster, stubs: Stubs) -> None:
    _, stub_b = stubs

    async def call(source: shared_pb2.Repository, *metadata: tuple[str, str]) -> aio.AioRpcError:
        with pytest.raises(aio.AioRpcError) as raised:
            await stub_b.ReplicateRepository(
                pb.ReplicateRepositoryRequest(repository=on_b("x.git"), source=source),
                metadata=(*auth(TOKEN_B), *metadata),
                timeout=30,
            )
        return raised.value

    good = gitaly_servers_metadata({"storage-a": GitalyServer(cluster.a.address, TOKEN_A)})
    no_header = await call(on_a("x.git"))
    garbage = await call(on_a("x.git"), ("gitaly-servers", "garbage!"))
    same = await call(on_b("x.git"), good)
    no_source = await call(shared_pb2.Repository(), good)
    unknown = await call(shared_pb2.Repository(storage_name="storage-z", relative_path="x.git"), good)
    bad_token = await call(on_a("x.git"), gitaly_servers_metadata({"storage-a": GitalyServer(cluster.a.address, "nope")}))

    assert no_header.code() == grpc.StatusCode.INVALID_ARGUMENT and "gitaly-servers" in (no_header.details() or "")
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT and "base64" in (garbage.details() or "")
    assert same.code() == grpc.StatusCode.INVALID_ARGUMENT and "storage-b" in (same.details() or "")
    assert no_source.code() == grpc.StatusCode.INVALID_ARGUMENT and "source" in (no_source.details() or "")
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT and "storage-z" in (unknown.details() or "")
    assert bad_token.code() == grpc.StatusCode.FAILED_PRECONDITION and "token" in (bad_token.details() or "")
    assert "nope" not in (bad_token.details() or "") and TOKEN_A not in (bad_token.details() or "")
    assert not (cluster.root_b / "x.git").exists()


async def test_only_missing_objects_travel(cluster: Cluster, stubs: Stubs, tmp_path: Path) -> None:
    stub_a, stub_b = stubs
    path = "incremental.git"
    await stub_a.CreateRepository(pb.CreateRepositoryRequest(repository=on_a(path)), metadata=auth(TOKEN_A))
    remote = NodeRemote(cluster.a.address, "storage-a", path, TOKEN_A)
    work = history_of(tmp_path / "work", commits=40)  # 120 objects: above git's unpackLimit
    await push(remote, work, "main")
    await replicate(stub_b, cluster, path)
    first = git(["count-objects", "-v"], cwd=cluster.root_b / path)
    assert "packs: 1" in first and "count: 0" in first

    commit(work, "one more")  # 3 new objects: commit, tree, blob
    await push(remote, work, "main")
    await replicate(stub_b, cluster, path)

    # Had the whole history travelled again, git would have kept a second
    # pack of 123 objects; only the 3 missing ones arrived (stored loose).
    second = git(["count-objects", "-v"], cwd=cluster.root_b / path)
    assert "packs: 1" in second and "count: 3" in second
    assert len(set(await checksums(stubs, path))) == 1


async def test_a_non_repository_in_the_way_is_reported_and_kept(cluster: Cluster, stubs: Stubs) -> None:
    stub_a, stub_b = stubs
    path = "occupied.git"
    await stub_a.CreateRepository(pb.CreateRepositoryRequest(repository=on_a(path)), metadata=auth(TOKEN_A))
    (cluster.root_b / path).mkdir(parents=True)
    (cluster.root_b / path / "notes.txt").write_text("keep me\n")

    with pytest.raises(aio.AioRpcError) as raised:
        await replicate(stub_b, cluster, path)

    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "not a repository" in (raised.value.details() or "")
    assert (cluster.root_b / path / "notes.txt").read_text() == "keep me\n"
