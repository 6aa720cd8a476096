"""The gateway never waits forever for a router that stopped answering, and
never cuts a long transfer that keeps going.

A silent router (accepts TCP, never answers) and a proxy that freezes a
live connection to a real node stand in for a hung router and for a host
that vanished without a RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from praefect.core.keepalive import SERVER_KEEPALIVE_OPTIONS
from praefect.core.router_config import RouterConfig
from praefect.core.server import server_options
from praefect.gateway.config import GatewayConfig, GatewayConfigError
from praefect.gateway.errors import http_error_for_rpc
from praefect.gateway.router import channel_options
from praefect.gateway.server import GatewayServer
from praefect.gateway.time_limits import WAITING_FOR_BODY, WAITING_FOR_MORE, WAITING_FOR_RESPONSE
from praefect.node.server import NodeServerConfig, node_server_options
from tests.gateway.conftest import PASSWORD, gateway_config
from tests.support.gateway import (
    RawResponse,
    basic_auth,
    fast_import_history,
    raw_request,
    refs_of,
    repo_url,
    run_git,
    upload_pack_request,
)
from tests.support.gateway_faults import FreezableProxy, SilentServer
from tests.support.gitenv import git, make_work_repo
from tests.support.processes import PRAEFECT, ServerProcess, start_process
from tests.support.router import router_settings

GATEWAY_LOGGER = "praefect.gateway"
UPLOAD_PACK_REFS = "info/refs?service=git-upload-pack"
UPLOAD_PACK_REQUEST = {"Content-Type": "application/x-git-upload-pack-request"}
RECEIVE_PACK_REQUEST = {"Content-Type": "application/x-git-receive-pack-request"}
ZERO_ID = "0" * 40
# The limits under test fire after 1 s; everything else the gateway does
# here takes milliseconds, so 10 s bounds a 504 generously on a busy machine.
LIMIT = 1.0
ANSWERED_WITHIN = 10.0


@pytest.fixture(autouse=True)
def _gateway_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=GATEWAY_LOGGER)


def address_of(gateway: GatewayServer) -> str:
    assert gateway.bound_addr is not None, "the gateway is not started"
    return str(gateway.bound_addr)


def timeout_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == GATEWAY_LOGGER
        and r.levelno == logging.WARNING
        and "did not answer within" in r.getMessage()
    ]


async def get_info_refs(gateway: GatewayServer, project: str) -> tuple[RawResponse, float]:
    """GET info/refs for upload-pack: the answer and the seconds it took."""
    started = time.monotonic()
    response = await raw_request(
        address_of(gateway),
        "GET",
        f"/{project}/{UPLOAD_PACK_REFS}",
        headers=basic_auth("alice", PASSWORD),
        time_limit=ANSWERED_WITHIN,
    )
    return response, time.monotonic() - started


async def post_pack(
    gateway: GatewayServer, project: str, service: str, body: bytes
) -> tuple[RawResponse, float]:
    """POST a git-upload-pack or git-receive-pack body: the answer and the
    seconds it took."""
    content_type = UPLOAD_PACK_REQUEST if service == "git-upload-pack" else RECEIVE_PACK_REQUEST
    started = time.monotonic()
    response = await raw_request(
        address_of(gateway),
        "POST",
        f"/{project}/{service}",
        headers={**basic_auth("alice", PASSWORD), **content_type},
        body=body,
        time_limit=ANSWERED_WITHIN,
    )
    return response, time.monotonic() - started


async def push_main(gateway: GatewayServer, project: str, work: Path) -> str:
    """Push `work`'s main to `project` through `gateway`; main's commit id."""
    url = repo_url(gateway.url, project, password=PASSWORD)
    (await run_git(["push", url, "main"], cwd=work)).check()
    return git(["rev-parse", "main"], cwd=work).strip()


@contextlib.asynccontextmanager
async def gateway_through_proxy(
    router: str, **limits: float
) -> AsyncIterator[tuple[FreezableProxy, GatewayServer]]:
    """A gateway with these limits whose router connection runs through a
    FreezableProxy to `router`."""
    async with (
        FreezableProxy(router) as proxy,
        GatewayServer(gateway_config(proxy.address, **limits)) as gateway,
    ):
        yield proxy, gateway


# -- configuration and command line -----------------------------------------


def test_time_limits_have_defaults_for_a_large_installation() -> None:
    config = GatewayConfig(listen_addr="127.0.0.1:0", router_addr="127.0.0.1:2305", token="t")

    assert config.advertise_timeout == 60
    assert config.response_start_timeout == 300
    assert config.keepalive_time == 30
    assert config.keepalive_timeout == 20


def test_bad_time_limits_are_refused_together_with_the_option_to_fix() -> None:
    with pytest.raises(GatewayConfigError) as caught:
        GatewayConfig(
            listen_addr="127.0.0.1:0",
            router_addr="127.0.0.1:2305",
            token="t",
            advertise_timeout=0,
            response_start_timeout=-1,
            keepalive_time=math.nan,
            keepalive_timeout=math.inf,
        )

    assert caught.value.problems == [
        "advertise timeout 0 is not a positive number of seconds: "
        "give --advertise-timeout SECONDS (default 60)",
        "response start timeout -1 is not a positive number of seconds: "
        "give --response-start-timeout SECONDS (default 300)",
        "keepalive time nan is not a positive number of seconds: set keepalive_time (default 30)",
        "keepalive timeout inf is not a positive number of seconds: set keepalive_timeout (default 20)",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--advertise-timeout", "0"],
            "error: advertise timeout 0.0 is not a positive number of seconds: "
            "give --advertise-timeout SECONDS (default 60)",
        ),
        (
            ["--response-start-timeout", "-5"],
            "error: response start timeout -5.0 is not a positive number of seconds: "
            "give --response-start-timeout SECONDS (default 300)",
        ),
        (
            ["--advertise-timeout", "nan"],
            "error: advertise timeout nan is not a positive number of seconds",
        ),
        (
            ["--advertise-timeout", "soon"],
            "Invalid value for '--advertise-timeout': 'soon' is not a valid float",
        ),
    ],
)
def test_gateway_command_refuses_a_bad_time_limit_with_a_precise_message(
    args: list[str], message: str
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRAEFECT_")}
    result = subprocess.run(
        [*PRAEFECT, "gateway", "--router", "127.0.0.1:1", "--token", "t", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "listening" not in result.stdout


async def test_gateway_command_applies_its_time_limit_options(
    silent_router: SilentServer, project: str
) -> None:
    process: ServerProcess = start_process(
        [
            "gateway",
            "--listen", "127.0.0.1:0",
            "--router", silent_router.address,
            "--token", "t",
            "--advertise-timeout", "1",
            "--response-start-timeout", "1.5",
        ]
    )  # fmt: skip
    try:
        refs = await raw_request(
            process.address, "GET", f"/{project}/{UPLOAD_PACK_REFS}", time_limit=ANSWERED_WITHIN
        )
        post = await raw_request(
            process.address,
            "POST",
            f"/{project}/git-upload-pack",
            headers=UPLOAD_PACK_REQUEST,
            body=upload_pack_request("1" * 40),
            time_limit=ANSWERED_WITHIN,
        )
    finally:
        process.stop()

    assert refs.status == 504, refs.body
    assert b"did not answer within 1 s" in refs.body
    assert post.status == 504, post.body
    assert b"did not answer within 1.5 s" in post.body
    assert f"{project}: PostUploadPack: the router at {silent_router.address}" in process.log()


# -- a router that never answers ---------------------------------------------


async def test_info_refs_from_a_silent_router_is_504_after_the_advertise_timeout(
    silent_router: SilentServer, project: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with GatewayServer(
        gateway_config(silent_router.address, advertise_timeout=LIMIT)
    ) as gateway:
        first, first_took = await get_info_refs(gateway, project)
        # The gateway stays healthy: the next request is answered as promptly,
        # and one that needs no router at once.
        second, second_took = await get_info_refs(gateway, project)
        unrelated = await raw_request(
            address_of(gateway), "GET", "/group/p.git/HEAD", headers=basic_auth("a", PASSWORD)
        )

    assert silent_router.accepted >= 1, "the gateway never connected to the silent router"
    for response, took in ((first, first_took), (second, second_took)):
        assert response.status == 504, response.body
        assert LIMIT <= took < ANSWERED_WITHIN
    message = first.body.decode()
    assert message.startswith(
        f"praefect gateway: the router at {silent_router.address} did not answer within 1 s "
        f"(InfoRefsUploadPack for {project}, waiting for the ref advertisement to start); "
        "check the router's log and `praefect check` (--advertise-timeout sets the limit)"
    ), message
    assert unrelated.status == 404
    warnings = timeout_warnings(caplog)
    assert len(warnings) == 2
    assert warnings[0].startswith(
        f"{project}: InfoRefsUploadPack: the router at {silent_router.address}"
    )
    assert "within 1 s" in warnings[0]


async def test_git_clone_from_a_silent_router_fails_with_the_504_message(
    silent_router: SilentServer, project: str, tmp_path: Path
) -> None:
    async with GatewayServer(
        gateway_config(silent_router.address, advertise_timeout=LIMIT)
    ) as gateway:
        url = repo_url(gateway.url, project, password=PASSWORD)
        started = time.monotonic()
        clone = await run_git(["clone", url, str(tmp_path / "clone")], time_limit=ANSWERED_WITHIN)
        took = time.monotonic() - started

    assert clone.returncode != 0
    assert (
        f"remote: praefect gateway: the router at {silent_router.address} did not answer within 1 s"
        in clone.stderr
    ), clone.stderr
    assert "504" in clone.stderr
    assert took < ANSWERED_WITHIN


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
async def test_post_to_a_silent_router_is_504_after_the_response_start_timeout(
    silent_router: SilentServer, project: str, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    method = "PostUploadPack" if service == "git-upload-pack" else "PostReceivePack"
    body = upload_pack_request("1" * 40) if service == "git-upload-pack" else b"0000"
    async with GatewayServer(
        gateway_config(silent_router.address, response_start_timeout=LIMIT)
    ) as gateway:
        response, took = await post_pack(gateway, project, service, body)
        again, again_took = await post_pack(gateway, project, service, body)

    for answer, seconds in ((response, took), (again, again_took)):
        assert answer.status == 504, answer.body
        assert LIMIT <= seconds < ANSWERED_WITHIN
    assert response.body.startswith(
        f"praefect gateway: the router at {silent_router.address} did not answer within 1 s "
        f"({method} for {project}, ".encode()
    ), response.body
    assert b"(--response-start-timeout sets the limit)" in response.body
    # No HTTP/2 connection ever comes up: the router takes not even the
    # first message of the request.
    assert WAITING_FOR_BODY.encode() in response.body
    warnings = timeout_warnings(caplog)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{project}: {method}: the router at {silent_router.address}")


# -- a live connection that goes silent --------------------------------------


async def test_a_router_that_goes_silent_is_504_and_the_gateway_recovers_when_it_answers_again(
    gateway: GatewayServer, node: ServerProcess, project: str, tmp_path: Path
) -> None:
    want = await push_main(gateway, project, make_work_repo(tmp_path / "work", commits=2))

    async with gateway_through_proxy(
        node.address, advertise_timeout=LIMIT, response_start_timeout=LIMIT
    ) as (proxy, limited):
        url = repo_url(limited.url, project, password=PASSWORD)
        (await run_git(["ls-remote", url], time_limit=ANSWERED_WITHIN)).check()

        proxy.freeze()
        refs, refs_took = await get_info_refs(limited, project)
        post, post_took = await post_pack(
            limited, project, "git-upload-pack", upload_pack_request(want)
        )
        proxy.thaw()
        clone = await run_git(["clone", url, str(tmp_path / "clone")], time_limit=30)

    assert refs.status == 504, refs.body
    assert LIMIT <= refs_took < ANSWERED_WITHIN
    assert post.status == 504, post.body
    assert LIMIT <= post_took < ANSWERED_WITHIN
    # The small request went out whole: the limit that fired is the one on
    # the start of the answer, which does not count sending the request.
    assert WAITING_FOR_RESPONSE.encode() in post.body
    clone.check()
    assert refs_of(tmp_path / "clone")["refs/remotes/origin/main"] == want


async def first_of(
    event: asyncio.Event, task: asyncio.Task[object], *, within: float, what: str
) -> None:
    """Wait until `event` is set or `task` ends, at most `within` seconds."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, task}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
    if not done:
        raise AssertionError(f"timed out after {within} s waiting for {what}")


MANY_REFS = 400_000


@pytest.fixture(scope="module")
def many_refs(node_storage: Path) -> str:
    """A repository on the node with 400,000 branches: a protocol v0 ref
    advertisement of about 26 MB, more than the gateway's gRPC buffers take
    in while its client does not read."""
    relative = "group/many-refs.git"
    path = node_storage / relative
    fast_import_history(path, commits=1)
    head = git(["rev-parse", "main"], cwd=path).strip()
    lines = "".join(f"{head} refs/heads/many/{n:06d}\n" for n in range(MANY_REFS))
    (path / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted \n" + lines)
    return relative


async def read_until_cut(
    response: aiohttp.ClientResponse,
    within: float,
    stalled: str = "the gateway still waited on a silent router",
) -> tuple[int, bool]:
    """Read the body: (bytes received, whether the connection was cut
    before the end). Fails, saying what `stalled`, when it neither ends nor
    is cut `within` s."""
    received = 0
    try:
        async with asyncio.timeout(within):
            while chunk := await response.content.read(64 * 1024):
                received += len(chunk)
    except aiohttp.ClientPayloadError:
        return received, True
    except TimeoutError:
        raise AssertionError(f"after {within} s {stalled} ({received} bytes received)") from None
    return received, False


async def test_a_router_that_stops_mid_advertisement_has_the_response_cut(
    node: ServerProcess, many_refs: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway_through_proxy(node.address, advertise_timeout=LIMIT) as (proxy, limited):
        # The node sends the `# service=` line at once; the freeze comes in
        # the middle of git's ref list.
        frozen = proxy.freeze_after(256 * 1024)
        http = aiohttp.ClientSession(base_url=limited.url, headers=basic_auth("alice", PASSWORD))
        async with http, http.get(f"/{many_refs}/{UPLOAD_PACK_REFS}") as response:
            assert response.status == 200
            received, cut = await read_until_cut(response, within=ANSWERED_WITHIN)
        assert frozen.is_set(), "the proxy never froze: the advertisement went through whole"
        router_address = proxy.address

    assert cut, "the advertisement ended cleanly although the router stopped in its middle"
    assert 0 < received < MANY_REFS * 60
    warnings = timeout_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"{many_refs}: InfoRefsUploadPack: the router at {router_address}"
    )
    assert f"within 1 s ({WAITING_FOR_MORE}; --advertise-timeout)" in warnings[0]


async def test_a_client_slower_than_the_advertise_timeout_gets_the_whole_advertisement(
    node: ServerProcess, many_refs: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit = 0.5
    async with (
        GatewayServer(gateway_config(node.address, advertise_timeout=limit)) as limited,
        FreezableProxy(address_of(limited)) as client_link,
    ):
        # The client's link stops after 64 KiB of the 26 MB: the gateway
        # then waits for the client while the router's call stays open,
        # its rest coming as the client takes it. (A gRPC deadline on the
        # whole call would cut it here.)
        frozen = client_link.freeze_after(64 * 1024)
        http = aiohttp.ClientSession(
            base_url=f"http://{client_link.address}", headers=basic_auth("alice", PASSWORD)
        )
        async with http, http.get(f"/{many_refs}/{UPLOAD_PACK_REFS}") as response:
            assert response.status == 200
            reading = asyncio.create_task(response.read())
            try:
                await first_of(
                    frozen, reading, within=ANSWERED_WITHIN, what="the client's link to freeze"
                )
                assert not reading.done(), "the advertisement went through before the link froze"
                # The stall under test (three times the limit), not a wait
                # for something to happen.
                await asyncio.sleep(3 * limit)
                client_link.thaw()
                async with asyncio.timeout(ANSWERED_WITHIN):
                    body = await reading
            finally:
                reading.cancel()

    assert body.endswith(b"0000")
    assert b"refs/heads/many/%06d" % (MANY_REFS - 1) in body
    assert timeout_warnings(caplog) == []


def write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(os.urandom(1024 * 1024))


@pytest.fixture
async def big_main(gateway: GatewayServer, project: str, tmp_path: Path) -> str:
    """`project` pushed through the gateway with a main that holds 4 MiB of
    random data (a pack of that size); main's commit id."""
    work = make_work_repo(tmp_path / "work", commits=1)
    write_random_file(work / "big.bin", 4 * 1024 * 1024)
    git(["add", "big.bin"], cwd=work)
    git(["commit", "-q", "-m", "big"], cwd=work)
    return await push_main(gateway, project, work)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_clone_stalled_longer_than_both_limits_mid_transfer_is_not_cut(
    big_main: str, node: ServerProcess, project: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    async with gateway_through_proxy(
        node.address, advertise_timeout=LIMIT, response_start_timeout=LIMIT
    ) as (proxy, limited):
        # Frozen once 256 KiB of the 4 MiB pack went through: the clone's
        # answer has started and is then stalled for as long as two other
        # requests need to hit both limits on the same silent connection.
        frozen = proxy.freeze_after(256 * 1024)
        url = repo_url(limited.url, project, password=PASSWORD)
        clone = asyncio.create_task(
            run_git(["clone", "-q", url, str(tmp_path / "clone")], time_limit=60)
        )
        try:
            await first_of(frozen, clone, within=30, what="the proxy to freeze mid-clone")
            assert not clone.done(), (
                f"the clone ended before 256 KiB went through: {clone.result()}"
            )
            refs, _ = await get_info_refs(limited, "group/probe.git")
            post, _ = await post_pack(
                limited, "group/probe.git", "git-upload-pack", upload_pack_request(big_main)
            )
            assert not clone.done(), "the clone ended while its connection was frozen"
            proxy.thaw()
            result = await clone
        finally:
            clone.cancel()

    assert refs.status == 504, refs.body
    assert post.status == 504, post.body
    result.check()
    assert refs_of(tmp_path / "clone")["refs/remotes/origin/main"] == big_main
    git(["fsck", "--no-progress"], cwd=tmp_path / "clone")
    assert not [w for w in timeout_warnings(caplog) if project in w]


def receive_pack_request(work: Path, new: str) -> tuple[bytes, bytes]:
    """The commands and the pack of a push of main (to a repository without
    it) with report-status on side band 1."""
    command = f"{ZERO_ID} {new} refs/heads/main\0report-status side-band-64k agent=test\n"
    pkt = b"%04x%s0000" % (len(command) + 4, command.encode())
    pack = subprocess.run(
        ["git", "pack-objects", "--revs", "--stdout", "-q"],
        cwd=work,
        input=b"main\n",
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return pkt, pack


async def test_a_push_body_sent_slower_than_the_limit_is_not_cut(
    node: ServerProcess, node_storage: Path, project: str, tmp_path: Path
) -> None:
    """The wait for the answer to a push starts when the whole pack is sent:
    a client whose upload takes longer than response_start_timeout (here it
    pauses three times mid-pack, a slow link's pace) still gets its push."""
    work = make_work_repo(tmp_path / "work", commits=3)
    new = git(["rev-parse", "main"], cwd=work).strip()
    commands, pack = receive_pack_request(work, new)
    limit = 0.5
    pause = limit
    pieces = [pack[i : i + len(pack) // 4 + 1] for i in range(0, len(pack), len(pack) // 4 + 1)]

    async def slow_client_body() -> AsyncIterator[bytes]:
        yield commands
        for piece in pieces:
            # The load pattern under test (a slow uploader), not a wait for
            # something to happen.
            await asyncio.sleep(pause)
            yield piece

    async with GatewayServer(gateway_config(node.address, response_start_timeout=limit)) as gateway:
        http = aiohttp.ClientSession(base_url=gateway.url, headers=basic_auth("alice", PASSWORD))
        async with http:
            # The GET creates the repository, as git's own push does.
            async with http.get(f"/{project}/info/refs?service=git-receive-pack") as refs:
                assert refs.status == 200
            started = time.monotonic()
            async with http.post(
                f"/{project}/git-receive-pack",
                data=slow_client_body(),
                headers=RECEIVE_PACK_REQUEST,
            ) as response:
                status = response.status
                body = await response.read()
            took = time.monotonic() - started

    assert status == 200, body
    assert took > len(pieces) * pause > limit
    assert b"unpack ok" in body
    assert b"ok refs/heads/main" in body
    assert git(["rev-parse", "main"], cwd=node_storage / project).strip() == new


# -- keepalive ----------------------------------------------------------------


def test_keepalive_pings_stay_well_inside_what_router_and_node_accept(tmp_path: Path) -> None:
    options = dict(channel_options(gateway_config("127.0.0.1:2305")))
    router = dict(
        server_options(
            RouterConfig(
                router_settings({"gitaly-1": "127.0.0.1:1"}, redis={"data_dir": str(tmp_path)})
            )
        )
    )

    # The router accepts a ping every 10 s; three times that leaves room for
    # pings that arrive bunched up.
    assert (
        options["grpc.keepalive_time_ms"]
        >= 3 * router["grpc.http2.min_ping_interval_without_data_ms"]
    )
    assert options["grpc.keepalive_timeout_ms"] == 20_000
    # The gateway may point at a server with gRPC's defaults (Gitaly): one
    # ping in 2 hours without calls, more is answered with GOAWAY too_many_pings.
    assert options["grpc.keepalive_permit_without_calls"] == 0
    # praefect's node accepts what the router accepts
    assert set(SERVER_KEEPALIVE_OPTIONS) <= set(router.items())
    assert set(SERVER_KEEPALIVE_OPTIONS) <= set(node_server_options(NodeServerConfig("127.0.0.1:0", {"s": tmp_path}, "t")))


async def test_a_connection_that_dies_silently_mid_clone_is_cut_by_keepalive(
    big_main: str, node: ServerProcess, project: str, caplog: pytest.LogCaptureFixture
) -> None:

    async with gateway_through_proxy(
        node.address, keepalive_time=1, keepalive_timeout=1
    ) as (proxy, watched):
        frozen = proxy.freeze_after(1024 * 1024)
        http = aiohttp.ClientSession(base_url=watched.url, headers=basic_auth("alice", PASSWORD))
        async with (
            http,
            http.post(
                f"/{project}/git-upload-pack",
                data=upload_pack_request(big_main),
                headers=UPLOAD_PACK_REQUEST,
            ) as response,
        ):
            assert response.status == 200
            # Without keepalive the gateway would wait for the frozen
            # connection forever; with it, the call fails within about two
            # seconds and the gateway cuts the response.
            received, cut = await read_until_cut(
                response,
                within=30,
                stalled="the gateway still waited on the frozen connection: "
                "keepalive did not notice that it died",
            )
        assert frozen.is_set(), "the proxy never froze: the pack went through whole"

    assert cut, "the response ended cleanly although its connection died mid-transfer"
    assert received < 4 * 1024 * 1024
    assert any(
        "failed after the response started: UNAVAILABLE" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_a_router_deadline_exceeded_is_504_saying_what_to_check() -> None:
    error = http_error_for_rpc(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "Deadline Exceeded",
        router_addr="10.0.0.1:2305",
        router_connected=True,
        relative_path="group/p.git",
    )

    assert error.status == 504
    assert error.message == (
        "praefect gateway: the router at 10.0.0.1:2305 did not answer in time (Deadline Exceeded); "
        "check the router's log and `praefect check`"
    )
