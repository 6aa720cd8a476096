from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from praefect.plugins.replication.embedded_redis import (
    RedisUrlError,
    connect,
    find_redis_server,
    parse_sentinel_url,
)
from tests.support.replication_cluster import short_tmp_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [find_redis_server(), *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.fixture
def master_and_sentinel() -> Iterator[tuple[int, int]]:
    """A TCP Redis on loopback and a real Sentinel monitoring it as `mymaster`."""
    with short_tmp_dir() as root:
        master_port, sentinel_port = _free_port(), _free_port()
        master = _spawn(["--port", str(master_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(root)], root)
        conf = root / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {root}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        )
        sentinel = _spawn([str(conf), "--sentinel"], root)
        try:
            yield master_port, sentinel_port
        finally:
            for process in (sentinel, master):
                process.terminate()
                process.wait(10)


async def _until_answers(url: str) -> None:
    async with asyncio.timeout(15):
        while True:
            client = connect(url)
            try:
                if await client.ping():
                    return
            except Exception:
                await asyncio.sleep(0.05)
            finally:
                await client.aclose()


async def test_redis_url_over_tcp(master_and_sentinel: tuple[int, int]) -> None:
    master_port, _ = master_and_sentinel
    url = f"redis://127.0.0.1:{master_port}/0"
    await _until_answers(url)
    client = connect(url)
    try:
        await client.set("k", "v")
        assert await client.get("k") == "v", "responses are decoded to text"
    finally:
        await client.aclose()


async def test_sentinel_url_reaches_the_monitored_master(master_and_sentinel: tuple[int, int]) -> None:
    master_port, sentinel_port = master_and_sentinel
    await _until_answers(f"redis://127.0.0.1:{master_port}")
    direct = connect(f"redis://127.0.0.1:{master_port}")
    await direct.set("through", "sentinel")
    await direct.aclose()
    url = f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster"
    await _until_answers(url)
    client = connect(url)
    try:
        assert await client.get("through") == "sentinel"
    finally:
        await client.aclose()


def test_sentinel_url_forms() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2,[::1]:26381/mymaster/2?sentinel_password=sp"
    )
    assert parsed.hosts == (("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26381))
    assert parsed.service == "mymaster"
    assert parsed.db == 2
    assert parsed.password == "s3cret"
    assert parsed.username is None
    assert parsed.sentinel_password == "sp"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://10.0.0.1:26379", "names no service"),
        ("redis+sentinel:///mymaster", "names no sentinel"),
        ("redis+sentinel://10.0.0.1:port/mymaster", "bad sentinel port"),
        ("redis+sentinel://10.0.0.1/mymaster/zero", "bad database number"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(RedisUrlError, match=problem):
        parse_sentinel_url(url)


def test_unsupported_scheme_lists_the_accepted_ones() -> None:
    with pytest.raises(RedisUrlError, match=r"use redis://, rediss://, unix:// or redis\+sentinel://"):
        connect("memcached://localhost:11211")
