from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from praefect.plugins.replication.embedded_redis import (
    DataDirInUse,
    EmbeddedRedis,
    EmbeddedRedisError,
    connect,
    find_redis_server,
)
from tests.support.replication_cluster import eventually, stream_entries


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state != "Z"


async def test_serves_on_a_unix_socket_in_the_data_dir_with_durable_aof(
    redis_server: EmbeddedRedis, redis_dir: Path
) -> None:
    client = connect(redis_server.url)
    try:
        assert await client.ping()
        assert redis_server.socket_path == redis_dir / "redis.sock"
        assert redis_server.socket_path.is_socket()
        config = await client.config_get("*")
        assert config["port"] == "0", "the embedded Redis must not listen on TCP"
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "always"
        assert Path(str(config["dir"])) == redis_dir
    finally:
        await client.aclose()
    assert (redis_dir / "praefect.lock").read_text().strip() == str(os.getpid())


async def test_a_second_server_on_the_same_data_dir_is_refused(
    redis_server: EmbeddedRedis, redis_dir: Path
) -> None:
    with pytest.raises(DataDirInUse) as refused:
        await EmbeddedRedis(redis_dir).start()
    message = str(refused.value)
    assert f"in use by process {os.getpid()}" in message
    assert "redis.data_dir" in message
    # the first server is untouched
    client = connect(redis_server.url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_stop_ends_the_process_and_releases_the_data_dir(redis_dir: Path) -> None:
    server = EmbeddedRedis(redis_dir)
    await server.start()
    pid = server.pid
    await server.stop()
    assert not _alive(pid)
    async with EmbeddedRedis(redis_dir) as again:
        client = connect(again.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()


async def test_sigkill_and_restart_on_the_same_data_dir_loses_no_acknowledged_xadd(
    redis_dir: Path,
) -> None:
    server = EmbeddedRedis(redis_dir)
    await server.start()
    client = connect(server.url)
    acknowledged = []
    for i in range(300):
        acknowledged.append(await client.xadd("praefect:{vs}:events:n1", {"n": str(i)}))
    await client.aclose()
    os.kill(server.pid, signal.SIGKILL)
    await server.stop()  # reaps the killed process and releases the lock

    async with EmbeddedRedis(redis_dir) as restarted:
        client = connect(restarted.url)
        try:
            entries = await stream_entries(client, "praefect:{vs}:events:n1")
        finally:
            await client.aclose()
    assert [entry_id for entry_id, _ in entries] == acknowledged
    assert [fields["n"] for _, fields in entries] == [str(i) for i in range(300)]


async def test_a_router_killed_with_sigkill_takes_its_redis_along_and_the_next_one_gets_the_data(
    redis_dir: Path,
) -> None:
    router = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect

        async def main():
            server = EmbeddedRedis(Path({str(redis_dir)!r}))
            await server.start()
            client = connect(server.url)
            await client.set("written-by", "first router")
            print(server.pid, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", router,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        redis_pid = int((await process.stdout.readline()).decode())
    process.kill()
    await process.wait()

    async def redis_gone() -> bool:
        return not _alive(redis_pid)

    await eventually(redis_gone, what="the dead router's redis-server to stop")
    async with EmbeddedRedis(redis_dir) as server:
        client = connect(server.url)
        try:
            assert await client.get("written-by") == "first router"
        finally:
            await client.aclose()


async def test_an_orphaned_server_of_a_dead_router_is_stopped_before_starting(
    redis_dir: Path,
) -> None:
    first = EmbeddedRedis(redis_dir)
    config = first._write_config()
    # Started without the parent-death signal, as if its router had died
    # in a way the kernel could not report.
    orphan = await asyncio.create_subprocess_exec(
        find_redis_server(), str(config), cwd=redis_dir,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:

        async def orphan_ready() -> bool:
            return (redis_dir / "redis.pid").exists() and (redis_dir / "redis.sock").exists()

        await eventually(orphan_ready, what="the orphan to start")
        async with EmbeddedRedis(redis_dir) as server:
            assert not _alive(orphan.pid), "the orphaned server must have been stopped"
            assert server.pid != orphan.pid
    finally:
        if orphan.returncode is None and _alive(orphan.pid):
            orphan.kill()
        async with asyncio.timeout(10):
            await orphan.wait()


async def test_a_data_dir_too_long_for_a_unix_socket_is_refused_clearly(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    with pytest.raises(EmbeddedRedisError, match="too long for a unix socket"):
        await EmbeddedRedis(deep).start()


async def test_a_server_that_cannot_start_reports_its_log(redis_dir: Path) -> None:
    (redis_dir / "appendonly.aof").write_text("this is not an append-only file\n")
    with pytest.raises(EmbeddedRedisError, match="exited with status"):
        await EmbeddedRedis(redis_dir).start()
    # the failed start released the lock: a second try fails the same way,
    # not with DataDirInUse
    with pytest.raises(EmbeddedRedisError, match="exited with status"):
        await EmbeddedRedis(redis_dir).start()
