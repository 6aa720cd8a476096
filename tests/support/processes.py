"""Start real praefect processes on loopback and stop them by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gitenv import git_env

LISTENING = re.compile(rb"^praefect [\w-]+ listening on (\S+)")
PRAEFECT = [sys.executable, "-m", "praefect.core.cli"]


@dataclass
class ServerProcess:
    """A praefect process that printed `... listening on HOST:PORT`."""

    argv: list[str]
    process: subprocess.Popen[bytes]
    address: str
    output: list[bytes] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return b"".join(self.output).decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.reader is not None:
            self.reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


def start_process(args: Sequence[str], *, timeout: float = 20, env: dict[str, str] | None = None) -> ServerProcess:
    """Run `praefect ARGS` and wait until it prints the address it listens on."""
    argv = [*PRAEFECT, *args]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env or git_env(),
        start_new_session=True,
    )
    output: list[bytes] = []
    found = threading.Event()
    address: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            match = LISTENING.search(line)
            if match and not found.is_set():
                address.append(match.group(1).decode())
                found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            reader.join(5)
            assert process.stdout is not None
            process.stdout.close()
            text = b"".join(output).decode(errors="replace")
            raise AssertionError(f"{' '.join(args)} did not start within {timeout} s:\n{text}")
    return ServerProcess(argv, process, address[0], output, reader)


def start_node(storages: dict[str, Path], token: str, listen: str = "127.0.0.1:0") -> ServerProcess:
    args = ["node", "serve", "--listen", listen, "--token", token]
    for name, path in storages.items():
        args += ["--storage", f"{name}={path}"]
    return start_process(args)
