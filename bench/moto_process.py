"""moto in its own process, as ``make local`` runs it beside the handlers, and the stack on it.

Inside the bench's process, moto's pure-Python request handling would share one GIL with the
connector it serves, and the figures would measure moto. Here it serves on a free port from a
child process (``python -m bench.moto_process``, which prints the port and serves until its
stdin closes), with DynamoDB's single-request atomicity kept (``atomic_dynamodb``). The
child's CPU time comes from /proc (Linux only; ``cpu_seconds()`` is None elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from moto.server import ThreadedMotoServer

from bench.common import ROOT
from bench.harness import stack_for
from capsule_oauth import config
from capsule_oauth.config import Settings
from local.capsule_emulator import Account, CapsuleEmulator
from local.lambda_container import reset_caches
from local.stack import Stack, Template, atomic_dynamodb

HOST = "127.0.0.1"
_STARTUP_TIMEOUT_S = 60


def serve(host: str = HOST) -> None:
    """The child: moto on a free port, its number on stdout, until stdin closes."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    with atomic_dynamodb():
        server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        server.start()
        print(server.get_host_and_port()[1], flush=True)
        sys.stdin.read()  # returns when the parent closes the pipe, or dies
        server.stop()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None off Linux."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)"; comm may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


class MotoProcess:
    """``start()`` spawns the child and waits for its port; ``stop()`` ends it."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("moto is not running")
        return self._process.pid

    def start(self) -> MotoProcess:
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.moto_process"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.isdigit():
            self._process.wait(timeout=10)
            tail = self._log_tail()
            self.stop()
            raise RuntimeError(f"moto server did not start: {tail}")
        self.port = int(line)
        return self

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.pid)

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return "\n".join(self._log.read().splitlines()[-10:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class ServerStack:
    """template.yaml's resources on moto in its own process; the emulator in this one."""

    template: Template
    stack: Stack
    emulator: CapsuleEmulator
    moto: MotoProcess

    @property
    def settings(self) -> Settings:
        return config.settings()

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """What a fresh interpreter needs to run ``logical_id`` against this stack."""
        return {**self.stack.environment(logical_id), "AWS_ENDPOINT_URL": self.moto.endpoint}


@contextlib.contextmanager
def server_stack(accounts: Iterable[Account] | None = None) -> Iterator[ServerStack]:
    """moto's process + the emulator + the function environment in ``os.environ`` (boto3
    here talks to that moto); everything undone on the way out."""
    saved = dict(os.environ)
    moto = MotoProcess().start()
    emulator = CapsuleEmulator(accounts=accounts)
    try:
        emulator.start()
        os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
        template, stack = stack_for(emulator)
        try:
            yield ServerStack(template, stack, emulator, moto)
        finally:
            reset_caches()
    finally:
        emulator.stop()
        moto.stop()
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    serve()
