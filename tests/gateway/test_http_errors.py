"""What git and HTTP clients see when something is wrong: credentials,
unknown repositories, bad paths, a router that is down or refuses the
gateway's token, and requests that are not git's."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from praefect.gateway.server import GatewayServer
from tests.gateway.conftest import NODE_TOKEN, PASSWORD, STORAGE, gateway_config
from tests.support.gateway import basic_auth, raw_request, repo_url, run_git, upload_pack_request
from tests.support.gitenv import git, make_work_repo
from tests.support.processes import ServerProcess, start_node

UPLOAD_PACK_REFS = "info/refs?service=git-upload-pack"


def unused_address() -> str:
    """A loopback address nothing listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def routerless_gateway() -> AsyncIterator[GatewayServer]:
    """A gateway whose router is not there: any call it made would be a 503."""
    async with GatewayServer(gateway_config(unused_address())) as server:
        yield server


def address_of(gateway: GatewayServer) -> str:
    assert gateway.bound_addr is not None, "the gateway is not started"
    return str(gateway.bound_addr)


async def test_missing_credentials_get_401_with_a_basic_challenge(
    gateway: GatewayServer, project: str
) -> None:
    response = await raw_request(address_of(gateway), "GET", f"/{project}/{UPLOAD_PACK_REFS}")

    assert response.status == 401
    assert response.headers["www-authenticate"].startswith('Basic realm="praefect"')
    assert b"authentication required" in response.body


async def test_wrong_password_gets_401_and_git_reports_failed_authentication(
    gateway: GatewayServer, project: str, tmp_path: Path
) -> None:
    response = await raw_request(
        address_of(gateway),
        "GET",
        f"/{project}/{UPLOAD_PACK_REFS}",
        headers=basic_auth("alice", "not the password"),
    )
    assert response.status == 401
    assert "www-authenticate" in response.headers

    run = await run_git(
        ["clone", repo_url(gateway.url, project, password="not the password"), str(tmp_path / "c")]
    )
    assert run.returncode != 0
    assert "Authentication failed" in run.stderr


async def test_git_without_credentials_fails_without_prompting(
    gateway: GatewayServer, project: str, tmp_path: Path
) -> None:
    run = await run_git(["clone", repo_url(gateway.url, project), str(tmp_path / "c")], time_limit=30)

    assert run.returncode != 0
    assert "terminal prompts disabled" in run.stderr


async def test_clone_of_an_unknown_repository_is_404(
    gateway: GatewayServer, url: str, project: str, tmp_path: Path
) -> None:
    response = await raw_request(
        address_of(gateway), "GET", f"/{project}/{UPLOAD_PACK_REFS}", headers=basic_auth("a", PASSWORD)
    )
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert project.encode() in response.body

    run = await run_git(["clone", url, str(tmp_path / "c")])
    assert run.returncode != 0
    assert "not found" in run.stderr


@pytest.mark.parametrize(
    ("method", "target", "problem"),
    [
        ("GET", f"/../etc/{UPLOAD_PACK_REFS}", b"'..'"),
        ("GET", f"/group/../../secret.git/{UPLOAD_PACK_REFS}", b"'..'"),
        ("GET", f"/group/%2e%2e/other.git/{UPLOAD_PACK_REFS}", b"'..'"),
        ("GET", f"/group/./project.git/{UPLOAD_PACK_REFS}", b"'.'"),
        ("GET", f"//etc/passwd/{UPLOAD_PACK_REFS}", b"absolute"),
        ("GET", f"/%2Fetc/project.git/{UPLOAD_PACK_REFS}", b"absolute"),
        ("GET", f"/{UPLOAD_PACK_REFS}", b"no repository"),
        ("GET", f"/.git/{UPLOAD_PACK_REFS}", b"no repository"),
        ("GET", f"/--upload-pack=evil/project.git/{UPLOAD_PACK_REFS}", b"starts with '-'"),
        ("POST", "/group/-project.git/git-upload-pack", b"starts with '-'"),
        ("POST", "/group//project.git/git-receive-pack", b"empty component"),
    ],
)
async def test_bad_repository_paths_are_refused_with_400_before_any_call(
    routerless_gateway: GatewayServer, method: str, target: str, problem: bytes
) -> None:
    response = await raw_request(
        address_of(routerless_gateway), method, target, headers=basic_auth("a", PASSWORD)
    )

    # With no router behind the gateway, a call would have been a 503.
    assert response.status == 400, response.body
    assert problem in response.body


async def test_router_down_is_503_with_a_message_naming_the_router(
    tmp_path: Path,
) -> None:
    node = start_node({STORAGE: tmp_path / "storage"}, NODE_TOKEN)
    try:
        async with GatewayServer(gateway_config(node.address)) as gateway:
            work = make_work_repo(tmp_path / "work", commits=1)
            url = repo_url(gateway.url, "group/p.git", password=PASSWORD)
            (await run_git(["push", url, "main"], cwd=work)).check()

            node.stop()
            response = await raw_request(
                address_of(gateway), "GET", f"/group/p.git/{UPLOAD_PACK_REFS}", headers=basic_auth("a", PASSWORD)
            )
            run = await run_git(["clone", url, str(tmp_path / "clone")])
    finally:
        node.stop()

    assert response.status == 503
    assert f"the router at {node.address} is unreachable".encode() in response.body
    assert run.returncode != 0
    assert f"remote: praefect gateway: the router at {node.address} is unreachable" in run.stderr


async def test_a_router_that_refuses_the_gateway_token_is_502_not_401(
    node: ServerProcess, project: str
) -> None:
    async with GatewayServer(gateway_config(node.address, token="not the node token")) as gateway:
        response = await raw_request(
            address_of(gateway), "GET", f"/{project}/{UPLOAD_PACK_REFS}", headers=basic_auth("a", PASSWORD)
        )

    assert response.status == 502
    assert b"rejected the gateway's token" in response.body
    assert b"--token" in response.body


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "message"),
    [
        ("GET", "/group/p.git/info/refs", {}, 403, b"dumb HTTP"),
        ("GET", "/group/p.git/info/refs?service=git-shell", {}, 403, b"dumb HTTP"),
        ("GET", "/group/p.git/git-upload-pack", {}, 405, b"use POST"),
        ("POST", f"/group/p.git/{UPLOAD_PACK_REFS}", {}, 405, b"use GET"),
        ("GET", "/group/p.git/HEAD", {}, 404, b"not a git smart HTTP endpoint"),
        (
            "POST",
            "/group/p.git/git-upload-pack",
            {"Content-Type": "text/plain"},
            415,
            b"Expected POST with Content-Type 'application/x-git-upload-pack-request'",
        ),
        (
            "POST",
            "/group/p.git/git-receive-pack",
            {"Content-Type": "application/x-git-receive-pack-request", "Content-Encoding": "br"},
            415,
            b"unsupported Content-Encoding 'br'",
        ),
    ],
)
async def test_requests_git_does_not_make_are_refused_with_a_reason(
    routerless_gateway: GatewayServer,
    method: str,
    target: str,
    headers: dict[str, str],
    status: int,
    message: bytes,
) -> None:
    response = await raw_request(
        address_of(routerless_gateway),
        method,
        target,
        headers={**basic_auth("a", PASSWORD), **headers},
    )

    assert response.status == status, response.body
    assert message in response.body
    assert response.headers["cache-control"] == "no-cache, max-age=0, must-revalidate"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_router_failing_mid_transfer_cuts_the_response_instead_of_ending_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = make_work_repo(tmp_path / "work", commits=1)
    with (work / "big.bin").open("wb") as out:
        for _ in range(32):
            out.write(os.urandom(1024 * 1024))
    git(["add", "big.bin"], cwd=work)
    git(["commit", "-q", "-m", "big"], cwd=work)
    want = git(["rev-parse", "main"], cwd=work).strip()
    node = start_node({STORAGE: tmp_path / "storage"}, NODE_TOKEN)
    try:
        async with GatewayServer(gateway_config(node.address)) as gateway:
            url = repo_url(gateway.url, "group/big.git", password=PASSWORD)
            (await run_git(["push", url, "main"], cwd=work)).check()
            http = aiohttp.ClientSession(base_url=gateway.url, headers=basic_auth("a", PASSWORD))
            async with (
                http,
                http.post(
                    "/group/big.git/git-upload-pack",
                    data=upload_pack_request(want),
                    headers={"Content-Type": "application/x-git-upload-pack-request"},
                ) as response,
            ):
                assert response.status == 200
                await response.content.readexactly(1024)
                node.kill9()
                # A clean end of the chunked body would let git take a
                # partial pack for the whole answer.
                with pytest.raises(aiohttp.ClientPayloadError):
                    while await response.content.read(1024 * 1024):
                        pass
    finally:
        node.stop()

    assert any("failed after the response started" in r.getMessage() for r in caplog.records)
