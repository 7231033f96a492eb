"""Count (and time) every AWS API call and every HTTP request to Capsule in this process.

AWS: ``botocore.client.BaseClient._make_api_call`` is wrapped, so every client counts, also
the ones Powertools creates for itself. Capsule: ``requests.Session.request`` is wrapped and
only URLs under the Capsule base URL count. Calls are recorded only while ``recording()`` is
on, so the bench's own set-up (seeding, driving the consent pages) is never counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import requests
from botocore.client import BaseClient
from moto.core.botocore_stubber import BotocoreStubber


@dataclass(frozen=True)
class Call:
    kind: str  # "aws", "capsule", "moto" (its server side of an AWS call) or "emulator"
    name: str  # "dynamodb:UpdateItem", "POST /oauth/token", "moto TrentService.Encrypt"
    seconds: float  # wall
    cpu_seconds: float  # CPU time of the calling thread (not inflated by waiting for the GIL)
    thread: str


@dataclass
class Recorder:
    capsule_base_url: str = ""
    calls: list[Call] = field(default_factory=list)
    items_read: Counter[str] = field(default_factory=Counter)
    _on: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Call]]:
        """Record the calls made inside the block; yields the list they land in."""
        start = len(self.calls)
        self._on = True
        taken: list[Call] = []
        try:
            yield taken
        finally:
            self._on = False
            with self._lock:
                taken.extend(self.calls[start:])

    def add(self, call: Call) -> None:
        if self._on:
            with self._lock:
                self.calls.append(call)

    def count_items(self, operation: str, parsed: dict[str, Any]) -> None:
        if self._on:
            items = len(parsed.get("Items", [])) + (1 if "Item" in parsed else 0)
            with self._lock:
                self.items_read[operation] += items

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.items_read.clear()


def aws_names(calls: list[Call]) -> list[str]:
    return [call.name for call in calls if call.kind == "aws"]


def capsule_names(calls: list[Call]) -> list[str]:
    return [call.name for call in calls if call.kind == "capsule"]


@contextlib.contextmanager
def _timed(recorder: Recorder, kind: str, name: str) -> Iterator[None]:
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        recorder.add(
            Call(
                kind,
                name,
                time.perf_counter() - started,
                time.thread_time() - cpu,
                threading.current_thread().name,
            )
        )


@contextlib.contextmanager
def installed(recorder: Recorder) -> Iterator[Recorder]:
    """Wrap botocore, moto's request handler, requests and the HTTP server side (the emulator
    is the only HTTP server in this process) for the life of the block.

    The server side is timed per request, not per connection: the emulator keeps connections
    alive, so a connection can outlive the recording. Its wall time includes waiting for the
    next request on a kept-alive connection; its CPU time does not."""
    make_api_call: Any = vars(BaseClient)["_make_api_call"]
    session_request: Any = vars(requests.Session)["request"]
    process_request: Any = vars(BotocoreStubber)["process_request"]
    handle_one_request: Any = vars(BaseHTTPRequestHandler)["handle_one_request"]

    def counted_api_call(client: Any, operation_name: str, api_params: Any) -> Any:
        service = client.meta.service_model.service_name
        with _timed(recorder, "aws", f"{service}:{operation_name}"):
            result = make_api_call(client, operation_name, api_params)
        if operation_name in {"Query", "Scan", "GetItem", "BatchGetItem"} and isinstance(
            result, dict
        ):
            recorder.count_items(operation_name, result)
        return result

    def counted_request(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        base = recorder.capsule_base_url
        if not base or not str(url).startswith(base):
            return session_request(session, method, url, *args, **kwargs)
        with _timed(recorder, "capsule", f"{method.upper()} {urlsplit(str(url)).path}"):
            return session_request(session, method, url, *args, **kwargs)

    def timed_mock(stubber: Any, request: Any) -> Any:
        target = request.headers.get("X-Amz-Target") or request.method
        name = target.decode() if isinstance(target, bytes) else str(target)
        with _timed(recorder, "moto", f"moto {name}"):
            return process_request(stubber, request)

    def timed_server(handler: Any) -> None:
        with _timed(recorder, "emulator", "emulator request"):
            handle_one_request(handler)

    patches: list[tuple[type, str, Any, Any]] = [
        (BaseClient, "_make_api_call", make_api_call, counted_api_call),
        (requests.Session, "request", session_request, counted_request),
        (BotocoreStubber, "process_request", process_request, timed_mock),
        (BaseHTTPRequestHandler, "handle_one_request", handle_one_request, timed_server),
    ]
    for owner, name, _, wrapper in patches:
        setattr(owner, name, wrapper)
    try:
        yield recorder
    finally:
        for owner, name, original, _ in patches:
            setattr(owner, name, original)
