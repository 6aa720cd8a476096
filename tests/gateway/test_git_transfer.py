"""Clone, fetch and push with the real git client through an in-process
gateway in front of a real node process."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from praefect.gateway.server import GatewayServer
from tests.gateway.conftest import PASSWORD
from tests.support.gateway import (
    basic_auth,
    fast_import_history,
    refs_of,
    repo_url,
    run_git,
    upload_pack_request,
)
from tests.support.gitenv import git, make_work_repo

ACCESS_LOGGER = "praefect.gateway.access"
NO_CACHE = {
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
    "Pragma": "no-cache",
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
}


@pytest.fixture(autouse=True)
def _access_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)


def access_lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER and needle in r.getMessage()]


def heads_and_tags(repository: Path) -> dict[str, str]:
    return {
        name: oid
        for name, oid in refs_of(repository).items()
        if name.startswith(("refs/heads/", "refs/tags/"))
    }


def make_history(work: Path) -> Path:
    """A work repository with main, two branches, a lightweight and an
    annotated tag."""
    make_work_repo(work, commits=3)
    git(["tag", "v0.1", "HEAD~2"], cwd=work)
    git(["tag", "-a", "-m", "release 1.0", "v1.0"], cwd=work)
    git(["checkout", "-q", "-b", "feature", "HEAD~1"], cwd=work)
    (work / "feature.txt").write_text("feature\n")
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "feature"], cwd=work)
    git(["branch", "fix", "main~1"], cwd=work)
    git(["checkout", "-q", "main"], cwd=work)
    return work


async def test_push_to_a_missing_repository_creates_it_and_it_clones_empty(
    gateway: GatewayServer, url: str, project: str, node_storage: Path, tmp_path: Path
) -> None:
    work = tmp_path / "empty"
    git(["init", "-q", "-b", "main", str(work)])
    assert not (node_storage / project).exists()

    (await run_git(["push", url, "--all"], cwd=work)).check()

    assert (node_storage / project / "HEAD").is_file(), "the push did not create the repository"
    clone = (await run_git(["clone", url, str(tmp_path / "clone")])).check()
    assert "cloned an empty repository" in clone.stderr
    assert refs_of(tmp_path / "clone") == {}


@pytest.mark.parametrize("version", ["0", "2"])
async def test_pushed_history_clones_back_with_every_ref(
    gateway: GatewayServer, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, version: str
) -> None:
    work = make_history(tmp_path / "work")
    (await run_git(["push", url, "--all"], cwd=work)).check()
    (await run_git(["push", url, "--tags"], cwd=work)).check()

    mirror = tmp_path / "mirror.git"
    (await run_git(["-c", f"protocol.version={version}", "clone", "--mirror", url, str(mirror)])).check()

    assert heads_and_tags(mirror) == heads_and_tags(work)
    assert len(heads_and_tags(work)) == 5
    git(["fsck", "--strict"], cwd=mirror)
    expected_protocol = 'protocol="version=2"' if version == "2" else 'protocol="-"'
    fetches = access_lines(caplog, "POST /group/")
    assert fetches and all("git-" in line for line in fetches)
    upload_packs = access_lines(caplog, "/git-upload-pack HTTP")
    assert upload_packs and all(expected_protocol in line for line in upload_packs), upload_packs


@pytest.mark.parametrize("version", ["0", "2"])
async def test_fetch_gets_new_commits_and_tags(
    gateway: GatewayServer, url: str, tmp_path: Path, version: str
) -> None:
    work = make_history(tmp_path / "work")
    (await run_git(["push", url, "--all"], cwd=work)).check()
    clone = tmp_path / "clone"
    (await run_git(["-c", f"protocol.version={version}", "clone", url, str(clone)])).check()

    (work / "later.txt").write_text("later\n")
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "later"], cwd=work)
    git(["tag", "-a", "-m", "release 2.0", "v2.0"], cwd=work)
    (await run_git(["push", url, "main", "v2.0"], cwd=work)).check()
    (await run_git(["-c", f"protocol.version={version}", "fetch", "--tags", "origin"], cwd=clone)).check()

    assert git(["rev-parse", "origin/main"], cwd=clone) == git(["rev-parse", "main"], cwd=work)
    assert git(["rev-parse", "v2.0"], cwd=clone) == git(["rev-parse", "v2.0"], cwd=work)


async def test_git_sends_a_large_negotiation_gzip_encoded(
    gateway: GatewayServer, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 60 branches on distinct commits: the wants exceed the 1 KiB above
    # which git gzips the upload-pack request.
    source = fast_import_history(tmp_path / "source.git", commits=60, branches=60)
    (await run_git(["push", "--mirror", url], cwd=source)).check()

    mirror = tmp_path / "mirror.git"
    (await run_git(["-c", "protocol.version=0", "clone", "--mirror", url, str(mirror)])).check()

    assert refs_of(mirror) == refs_of(source)
    gzipped = [line for line in access_lines(caplog, "/git-upload-pack HTTP") if 'encoding="gzip"' in line]
    assert gzipped, "git did not send a gzip-encoded upload-pack request"
    assert all('" 200 ' in line for line in gzipped)


@pytest.fixture
async def http(gateway: GatewayServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=gateway.url, headers=basic_auth("alice", PASSWORD)
    ) as session:
        yield session


async def pushed_main(url: str, tmp_path: Path) -> str:
    work = make_work_repo(tmp_path / "work", commits=2)
    (await run_git(["push", url, "main"], cwd=work)).check()
    return git(["rev-parse", "main"], cwd=work).strip()


async def test_a_gzip_request_body_sent_in_chunks_is_decoded(
    http: aiohttp.ClientSession, url: str, project: str, tmp_path: Path
) -> None:
    want = await pushed_main(url, tmp_path)
    compressed = gzip.compress(upload_pack_request(want))

    async def chunked_body() -> AsyncIterator[bytes]:
        # Split inside the gzip stream: the gateway must inflate incrementally.
        for offset in range(0, len(compressed), 7):
            yield compressed[offset : offset + 7]

    async with http.post(
        f"/{project}/git-upload-pack",
        data=chunked_body(),
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
    ) as response:
        body = await response.read()
        assert response.status == 200, body
        assert response.headers["Content-Type"] == "application/x-git-upload-pack-result"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert {name: response.headers[name] for name in NO_CACHE} == NO_CACHE
    assert body.startswith(b"0008NAK\n")
    assert b"PACK" in body


async def test_info_refs_has_git_http_backend_headers_and_protocol_v2(
    http: aiohttp.ClientSession, url: str, project: str, tmp_path: Path
) -> None:
    await pushed_main(url, tmp_path)
    path = f"/{project.removesuffix('.git')}/info/refs"

    async with http.get(path, params={"service": "git-upload-pack"}) as response:
        v0 = await response.read()
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
        assert {name: response.headers[name] for name in NO_CACHE} == NO_CACHE
    async with http.get(
        path, params={"service": "git-upload-pack"}, headers={"Git-Protocol": "version=2"}
    ) as response:
        v2 = await response.read()
        assert response.status == 200

    assert v0.startswith(b"001e# service=git-upload-pack\n0000")
    assert b"refs/heads/main" in v0
    assert v2.startswith(b"000eversion 2\n")
    assert b"fetch" in v2


async def test_invalid_gzip_body_is_a_bad_request(
    http: aiohttp.ClientSession, url: str, project: str, tmp_path: Path
) -> None:
    await pushed_main(url, tmp_path)
    async with http.post(
        f"/{project}/git-upload-pack",
        data=b"this is not gzip",
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
    ) as response:
        assert response.status == 400
        assert "not valid gzip" in await response.text()


async def test_repository_path_without_dot_git_is_the_same_repository(
    gateway: GatewayServer, url: str, project: str, tmp_path: Path
) -> None:
    want = await pushed_main(url, tmp_path)
    short_url = repo_url(gateway.url, project.removesuffix(".git"), password=PASSWORD)
    clone = tmp_path / "clone"
    (await run_git(["clone", short_url, str(clone)])).check()
    assert git(["rev-parse", "HEAD"], cwd=clone).strip() == want


async def test_an_http_1_0_client_gets_the_advertisement_without_chunks(
    gateway: GatewayServer, url: str, project: str, tmp_path: Path
) -> None:
    await pushed_main(url, tmp_path)
    assert gateway.bound_addr is not None
    host, _, port = gateway.bound_addr.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = basic_auth("alice", PASSWORD)["Authorization"]
    writer.write(
        f"GET /{project}/info/refs?service=git-upload-pack HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"chunked" not in head.lower()
    assert body.startswith(b"001e# service=git-upload-pack\n0000")
