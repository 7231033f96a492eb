"""The emulator over HTTP: ``CapsuleEmulator`` serves the store from a daemon thread."""

from __future__ import annotations

import sys
import threading
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import urlsplit

from local.capsule_emulator import faults, routes
from local.capsule_emulator.faults import Faults
from local.capsule_emulator.store import (
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_RATE_LIMIT,
    DEFAULT_SCOPE,
    Account,
    CapsuleStore,
)
from local.capsule_emulator.wire import Reply, Request, endpoint_of, json_reply

MAX_BODY: Final = 1 << 20


class CapsuleEmulator:
    """Capsule's OAuth 2.0 server and API v2, served from a daemon thread.

    What it remembers is ``store``; ``faults`` queues faults to inject.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        accounts: Iterable[Account] | None = None,
        allowed_redirect_uris: Iterable[str] | None = None,
        rate_limit: int = DEFAULT_RATE_LIMIT,
        log_requests: bool = False,
        hook_retry_scale: float = 1.0,
    ) -> None:
        self.store = CapsuleStore(
            client_id=client_id,
            client_secret=client_secret,
            accounts=accounts,
            allowed_redirect_uris=allowed_redirect_uris,
            access_token_lifetime=access_token_lifetime,
            rate_limit=rate_limit,
        )
        if not hook_retry_scale > 0:
            raise ValueError("hook_retry_scale must be above 0")
        self.store.hooks.retry_scale = hook_retry_scale
        self.faults = Faults()
        self.host = host
        self.port = port
        self.log_requests = log_requests
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> CapsuleEmulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self.stopping = threading.Event()
        server = _Server((self.host, self.port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="capsule-emulator",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        threading.Thread(target=self._deliver_hooks, name="capsule-hooks", daemon=True).start()
        return self

    def _deliver_hooks(self) -> None:
        """Send REST hook deliveries as they fall due, until stopped (as Capsule does)."""
        registry = self.store.hooks
        stopping = self.stopping
        while not stopping.is_set():
            wait = registry.next_due_in()
            registry.wake.wait(0.5 if wait is None else min(wait, 0.5))
            registry.wake.clear()
            for delivery, target in registry.take_due():
                if stopping.is_set():
                    return
                registry.answered(delivery, _post(target, delivery.body))

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CapsuleEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        server = self._server
        if server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        host, port = server.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        return f"http://{shown}:{port}"

    # ----------------------------------------------------------------- the store, briefly

    @property
    def client_id(self) -> str:
        return self.store.client_id

    @property
    def client_secret(self) -> str:
        return self.store.client_secret

    @property
    def accounts(self) -> tuple[Account, ...]:
        return self.store.accounts

    @property
    def token_requests(self) -> list[dict[str, str]]:
        """Every /oauth/token request's parameters, recorded before any fault applies."""
        return self.store.token_requests

    def issue_tokens_for(
        self, subdomain: str, user_id: int, scope: str = DEFAULT_SCOPE
    ) -> dict[str, Any]:
        """Create a grant as if the user had gone through the pages; returns the token JSON."""
        return self.store.issue_tokens_for(subdomain, user_id, scope)

    def state(self) -> dict[str, object]:
        """A summary with no secrets in it (what GET /_emulator/state answers)."""
        return routes.state(self.store, self.faults)


def _post(url: str, body: bytes) -> int | None:
    """POST a delivery; the status answered, or None when nothing answered."""
    request = urllib.request.Request(  # noqa: S310 - targets are http(s) (hooks.py checks)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http(s) only
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except (OSError, ValueError):
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: CapsuleEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server_version = "CapsuleEmulator/1.0"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30
    path_only = "/"

    @property
    def emulator(self) -> CapsuleEmulator:
        return cast(_Server, self.server).emulator

    # Never log the request line: it can carry codes, state and tokens.
    def log_message(self, *_args: Any) -> None:
        return

    def log_request(self, code: int | str = "-", _size: int | str = "-") -> None:
        if self.emulator.log_requests:
            status = getattr(code, "value", code)
            print(f"{self.command} {self.path_only} {status}", file=sys.stderr, flush=True)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self.path_only = parts.path or "/"
        try:
            body = self._read_body()
        except _BodyError as exc:
            self._send(json_reply(exc.status, {"message": str(exc)}))
            return
        emulator = self.emulator
        request = Request(
            method=self.command,
            path=self.path_only,
            query=parts.query,
            body=body,
            authorization=self.headers.get("Authorization"),
            content_type=self.headers.get("Content-Type", ""),
            base_url=emulator.url,
        )
        routes.record(emulator.store, request)
        try:
            endpoint = endpoint_of(request.path)
            fault = None if endpoint is None else emulator.faults.take(endpoint)
            if fault is not None and fault.kind == "latency":
                if emulator.stopping.wait(fault.seconds):
                    self.close_connection = True
                    return
                fault = None
            if fault is not None and fault.kind == "drop":
                self.close_connection = True
                return
            if fault is not None and endpoint is not None:
                reply = faults.reply_for(
                    fault, endpoint, emulator.store.rate_limit, emulator.store.now()
                )
            else:
                reply = routes.handle(emulator.store, emulator.faults, request)
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._send(json_reply(500, {"error": "server_error", "message": "Emulator bug"}))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise _BodyError(411, "Send a Content-Length; chunked bodies are not supported")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            raise _BodyError(400, "Bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            raise _BodyError(413, "Request body too large")
        return self.rfile.read(length)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        self.wfile.flush()
        self.close_connection = True
