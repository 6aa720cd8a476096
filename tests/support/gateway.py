"""Helpers for the gateway tests: git run without blocking the event loop,
raw HTTP requests (clients normalise the paths the tests must send as is),
clone URLs with credentials, and a process's resident memory."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tests.support.gitenv import git, git_env


@dataclass(frozen=True)
class GitRun:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> GitRun:
        assert self.returncode == 0, f"git failed ({self.returncode}):\n{self.stderr}"
        return self


async def run_git(
    args: Sequence[str],
    cwd: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    time_limit: float = 120,
) -> GitRun:
    """The real git client as a child process; the loop stays free to serve
    an in-process gateway. GIT_TERMINAL_PROMPT=0: git never waits for a
    password on a terminal."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=git_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"git {' '.join(args)} did not finish within {time_limit} s") from None
    return GitRun(process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def refs_of(repository: Path) -> dict[str, str]:
    """ref name -> object id of every ref (bare or work repository)."""
    output = git(["for-each-ref", "--format=%(refname) %(objectname)"], cwd=repository)
    return dict(line.split(" ", 1) for line in output.splitlines())


def repo_url(base_url: str, relative_path: str, user: str = "alice", password: str | None = None) -> str:
    """http://user:password@host:port/relative_path, credentials
    percent-encoded (none when password is None)."""
    scheme, _, host = base_url.partition("://")
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password is not None else ""
    return f"{scheme}://{credentials}{host}/{relative_path}"


def upload_pack_request(want: str) -> bytes:
    """A protocol v0 stateless fetch of `want` with nothing in common: the
    answer is NAK and the whole pack on side band 1."""
    want_line = f"want {want} side-band-64k ofs-delta no-progress\n"
    return b"%04x%s0000%04xdone\n" % (len(want_line) + 4, want_line.encode(), len("done\n") + 4)


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The Authorization header for HTTP basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(
    address: str,
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    time_limit: float = 10,
) -> RawResponse:
    """Send one HTTP/1.1 request with `target` exactly as given (HTTP clients
    resolve '..' and '//' before sending) and read the whole answer."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {address}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), time_limit)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return RawResponse(int(status_line.split(" ")[1]), parsed, payload)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def rss_bytes(pid: int) -> int:
    """The resident set size of `pid` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread until
    stopped; `peak` is the largest sample."""

    pid: int
    interval: float = 0.01
    samples: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_bytes(self.pid))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak(self) -> int:
        assert self.samples, "no RSS sample was taken"
        return max(self.samples)


def fast_import_history(path: Path, commits: int, branches: int = 0, tags: int = 0) -> Path:
    """A bare repository at `path` whose `main` has `commits` commits, plus
    `branches` branches (branch-N: one commit on top of main's commit N) and
    `tags` annotated tags (vN on commit N), written in one git fast-import."""
    git(["init", "-q", "--bare", "-b", "main", str(path)])
    stream = bytearray()

    def data(text: str) -> None:
        encoded = text.encode()
        stream.extend(b"data %d\n%s\n" % (len(encoded), encoded))

    when = 1_700_000_000
    for n in range(1, commits + 1):
        stream += b"commit refs/heads/main\nmark :%d\n" % n
        stream += b"committer Test <test@example.com> %d +0000\n" % (when + n)
        data(f"commit {n}")
        if n > 1:
            stream += b"from :%d\n" % (n - 1)
        stream += b"M 644 inline file-%d.txt\n" % (n % 50)
        data(f"content of commit {n}\n")
    for n in range(1, branches + 1):
        stream += b"commit refs/heads/branch-%d\n" % n
        stream += b"committer Test <test@example.com> %d +0000\n" % (when + commits + n)
        data(f"branch {n}")
        stream += b"from :%d\n" % (1 + (n - 1) % commits)
        stream += b"M 644 inline branch.txt\n"
        data(f"branch {n}\n")
    for n in range(1, tags + 1):
        stream += b"tag v%d\nfrom :%d\n" % (n, 1 + (n - 1) % commits)
        stream += b"tagger Test <test@example.com> %d +0000\n" % (when + n)
        data(f"release {n}")
    git(["fast-import", "--quiet"], cwd=path, input=bytes(stream))
    return path
