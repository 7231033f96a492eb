"""A local stand-in for API Gateway (HTTP API): template.yaml's routes, served by the handlers.

Each request matching an ``HttpApi`` event of template.yaml becomes an API Gateway HTTP API
payload 2.0 event and is passed to that function's handler, in this process, with a fresh
Lambda context: what ``sam local start-api`` does, without Docker. The landing page at ``/``
and the ``/_local/*`` endpoints exist only here, to look at and poke the stack.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from local import sigv4
from local.lambda_container import Invoke
from local.landing import FAVICON, landing_page
from local.logs import request_line
from local.stack import ACCOUNT, REGION, Route


def http_api_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    route_key: str,
    source_ip: str,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway would send for this request."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    cookies = [c.strip() for c in lowered.pop("cookie", "").split(";") if c.strip()]
    lowered.setdefault("x-forwarded-proto", "http")
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": lowered,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "domainName": lowered.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
    return event


def match_route(routes: list[Route], method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    """The route a request matches, and its ``{name}`` path parameters (URL-decoded), as
    API Gateway matches them: a parameter is one whole path segment."""
    segments = path.split("/")
    for route in routes:
        pattern = route.path.split("/")
        if route.method != method or len(pattern) != len(segments):
            continue
        parameters: dict[str, str] = {}
        for expected, actual in zip(pattern, segments, strict=True):
            if expected.startswith("{") and expected.endswith("}") and actual:
                parameters[expected[1:-1]] = unquote(actual)
            elif expected != actual:
                break
        else:
            return route, parameters
    return None, {}


def _response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a handler's result, as API Gateway would send them."""
    if not isinstance(result, dict) or "statusCode" not in result:
        body = json.dumps(result).encode()
        return 200, [("Content-Type", "application/json")], body
    headers = [(name, str(value)) for name, value in (result.get("headers") or {}).items()]
    headers += [("Set-Cookie", cookie) for cookie in result.get("cookies") or []]
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return int(result["statusCode"]), headers, body


class LocalControl:
    """What the landing page and ``/_local/*`` can do; provided by the running stack."""

    def connections(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def refresh_now(self, connection_id: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def call_capsule(self, connection_id: str, path: str) -> dict[str, Any]:
        raise NotImplementedError

    def disconnect(self, connection_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def connect_session(self, owner: str, *, return_here: bool = True) -> dict[str, Any]:
        """What the app's backend gets from POST /connect-sessions for ``owner``."""
        raise NotImplementedError

    def status_events(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def pump_status_events(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class Gateway:
    def __init__(
        self,
        routes: list[Route],
        invoke: Invoke,
        control: LocalControl,
        *,
        credentials: sigv4.KnownCredentials,
        host: str = "127.0.0.1",
        port: int = 3000,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        self.routes = routes
        self.access_log = access_log  # one line per request (local/logs.py request_line)
        self.credentials = credentials  # who may call the AWS_IAM routes
        self.invoke = invoke
        self.control = control
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Gateway:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gateway", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "capsule-local-gateway"
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the query string of /auth/callback carries the code: log nothing

            def do_GET(self) -> None:
                gateway._serve(self)

            def do_POST(self) -> None:
                gateway._serve(self)

            def do_HEAD(self) -> None:
                gateway._serve(self)

            def do_DELETE(self) -> None:
                gateway._serve(self)

        return Handler

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        note = ""
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        route, path_parameters = match_route(self.routes, request.command, parts.path)
        try:
            if route is not None:
                caller = None
                if route.authorizer == "AWS_IAM":
                    caller = sigv4.verify(
                        method=request.command,
                        path=parts.path,
                        raw_query=parts.query,
                        headers=dict(request.headers.items()),
                        body=body,
                        known=self.credentials,
                        region=REGION,
                    )
                event = http_api_event(
                    method=request.command,
                    raw_path=parts.path,
                    raw_query=parts.query,
                    headers=dict(request.headers.items()),
                    body=body,
                    route_key=f"{route.method} {route.path}",
                    source_ip=request.client_address[0],
                )
                if caller is not None:  # as API Gateway passes a verified IAM caller on
                    event["requestContext"]["authorizer"] = {"iam": _iam(caller)}
                if path_parameters:
                    event["pathParameters"] = path_parameters
                status, headers, payload = _response_parts(self.invoke(route.function, event))
            else:
                form = body.decode("utf-8", "replace") if body else ""
                query = "&".join(filter(None, [parts.query, form]))
                status, headers, payload = self._local(request.command, parts.path, query)
        except sigv4.SignatureRejected as refusal:  # API Gateway's answer; no handler runs
            note = f"signature refused: {refusal.reason}"
            status, headers = 403, [("Content-Type", "application/json")]
            payload = json.dumps({"message": refusal.message}).encode()
        except Exception as error:  # the stand-in for API Gateway's own 500
            traceback.print_exc()  # a crash is the developer's to see, as in CloudWatch
            status, headers = 500, [("Content-Type", "application/json")]
            payload = json.dumps(
                {"message": f"Internal Server Error ({type(error).__name__})"}
            ).encode()
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)
        if self.access_log is not None:
            self.access_log(
                request_line(
                    method=request.command,
                    path=parts.path,
                    status=status,
                    started=started,
                    function=route.function if route is not None else "local",
                    note=note,
                )
            )

    def _local(  # noqa: PLR0912 - one branch per local endpoint
        self, method: str, path: str, query: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        params = dict(parse_qsl(query))
        as_json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if method in {"GET", "HEAD"} and path == "/":
            html = landing_page(
                self.control.connections(),
                self.control.describe(),
                params,
                self.control.pump_status_events(),
            )
            return (
                200,
                [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
                html.encode(),
            )
        if method in {"GET", "HEAD"} and path == "/favicon.ico":
            icon = [("Content-Type", "image/svg+xml"), ("Cache-Control", "max-age=86400")]
            return 200, icon, FAVICON
        if method == "GET" and path == "/_local/connections":
            return 200, as_json, json.dumps(self.control.connections()).encode()
        if method == "GET" and path == "/_local/events":
            return 200, as_json, json.dumps(self.control.pump_status_events()).encode()
        if method == "GET" and path == "/_local/stack":
            return 200, as_json, json.dumps(self.control.describe()).encode()
        if method == "POST" and path == "/_local/refresh":
            connection_id = params.get("connection_id") or None
            result = self.control.refresh_now(connection_id)
            if params.get("back") == "1":
                if connection_id is None:
                    said = {"done": "scheduled", "due": str(result.get("due", 0))}
                    said["failures"] = str(sum((result.get("failures") or {}).values()))
                else:
                    said = {"done": "refreshed", "connection_id": connection_id}
                    said["outcome"] = str(result.get("outcome", ""))
                return 303, [("Location", _back_to_landing(params, said))], b""
            return 200, as_json, json.dumps(result).encode()
        if method == "POST" and path == "/_local/disconnect":
            result = self.control.disconnect(params["connection_id"])
            if params.get("back") == "1":
                said = {"done": "disconnected", "connection_id": params["connection_id"]}
                if result.get("status") != "disconnected":
                    said["error"] = str(result.get("error") or "failed")
                return 303, [("Location", _back_to_landing(params, said))], b""
            return 200, as_json, json.dumps(result).encode()
        if method == "POST" and path == "/_local/connect":
            owner = params.get("owner") or "demo-user-1"
            # An unticked checkbox is absent from the form; a bare POST keeps the default.
            comes_back = params.get("return_here") == "1" or "owner" not in params
            session = self.control.connect_session(owner, return_here=comes_back)
            if "connect_url" not in session:
                return 400, as_json, json.dumps(session).encode()
            return 303, [("Location", session["connect_url"])], b""
        if method == "POST" and path == "/_local/call":
            result = self.control.call_capsule(params["connection_id"], params.get("path", "/site"))
            return 200, as_json, json.dumps(result).encode()
        return 404, as_json, json.dumps({"message": "Not Found"}).encode()


def _back_to_landing(params: dict[str, str], said: dict[str, str]) -> str:
    """The landing page again, saying what was done, with the owner the person typed."""
    kept = {"owner": params["owner"]} if params.get("owner") else {}
    return "/?" + urlencode({**said, **kept})


def _iam(caller: sigv4.Caller) -> dict[str, Any]:
    return {
        "accessKey": caller.access_key,
        "accountId": caller.account_id,
        "callerId": caller.user_id,
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": caller.user_arn,
        "userId": caller.user_id,
    }
