"""Where the local stack's output goes: one line per request in the terminal, each function's
own logs in ``.local/logs/<function>.log`` (and in the terminal too with ``--verbose``).

Every function runs in this one process, so what a handler writes (Powertools' JSON lines,
metrics, warnings) is told apart by the function running in the writing thread
(``local.lambda_container.current_function``), as Lambda gives each function its own log group.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import io
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from local.lambda_container import current_function
from local.stack import ROOT

LOG_DIR = ROOT / ".local" / "logs"


class FunctionLogs:
    """One append-only file per function, opened on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, TextIO] = {}
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.log"):  # a fresh run starts with fresh logs
            old.write_text("", encoding="utf-8")

    def path(self, function: str) -> Path:
        return self.directory / f"{function}.log"

    def write(self, function: str, text: str) -> None:
        with self._lock:
            stream = self._files.get(function)
            if stream is None:
                stream = self._files[function] = self.path(function).open("a", encoding="utf-8")
            stream.write(text)
            stream.flush()


class RoutedOutput(io.TextIOBase):
    """Stands for sys.stdout or sys.stderr: a function's writes go to its log file (and the
    terminal when verbose), everything else to the terminal."""

    def __init__(self, terminal: TextIO, logs: FunctionLogs, *, verbose: bool) -> None:
        self.terminal = terminal
        self.logs = logs
        self.verbose = verbose

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        function = current_function()
        if function is not None:
            self.logs.write(function, text)
            if not self.verbose:
                return len(text)
        self.terminal.write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.terminal.encoding


def _carry_context(submit: Callable[..., Any]) -> Callable[..., Any]:
    def submit_in_context(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    return submit_in_context


def route_function_output(*, verbose: bool, directory: Path = LOG_DIR) -> FunctionLogs:
    """Send each function's output to its log file from now on. Call it before the layer is
    imported: Powertools' handler keeps the stdout it finds then."""
    logs = FunctionLogs(directory)
    # A handler that counted nothing this time is normal here; Powertools warns of it each time.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    sys.stdout = RoutedOutput(sys.stdout, logs, verbose=verbose)
    sys.stderr = RoutedOutput(sys.stderr, logs, verbose=verbose)
    # A handler's worker threads (the refresh run's pool) log as the function that made them.
    pool = concurrent.futures.ThreadPoolExecutor
    if not getattr(pool.submit, "_carries_context", False):
        carrying = _carry_context(pool.submit)
        carrying._carries_context = True  # type: ignore[attr-defined]
        pool.submit = carrying  # type: ignore[method-assign]
    return logs


def request_line(
    *, method: str, path: str, status: int, started: float, function: str, note: str = ""
) -> str:
    """What the terminal shows for one request: never its query string, headers or body."""
    millis = (time.monotonic() - started) * 1000
    line = f"{time.strftime('%H:%M:%S')}  {method:<6} {path}  {status}  {millis:.0f} ms  {function}"
    return f"{line}  {note}" if note else line
