"""A local stand-in for API Gateway (HTTP API): template.yaml's routes, served by the handlers.

Each request matching an ``HttpApi`` event of template.yaml becomes an API Gateway HTTP API
payload 2.0 event and is passed to that function's handler, in this process, with a fresh
Lambda context: what ``sam local start-api`` does, without Docker. The landing page at ``/``
and the ``/_local/*`` endpoints exist only here, to look at and poke the stack.

The gateway holds real Capsule tokens when pointed at real Capsule, so it answers only
requests addressed to this machine (``Host`` localhost, 127.0.0.1 or [::1]: no DNS
rebinding), and a POST to a local endpoint must carry this process's CSRF token, which the
landing page puts in each of its forms (no cross-site form can).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
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
        if route.method not in {method, "ANY"}:
            continue
        greedy = pattern[-1].endswith("+}")  # {name+}: the rest of the path, at least one
        if greedy and len(segments) >= len(pattern) and segments[len(pattern) - 1]:
            segments_here = [*segments[: len(pattern) - 1], "/".join(segments[len(pattern) - 1 :])]
            pattern = [*pattern[:-1], pattern[-1].replace("+}", "}")]
        elif len(pattern) == len(segments) and not greedy:
            segments_here = segments
        else:
            continue
        parameters: dict[str, str] = {}
        for expected, actual in zip(pattern, segments_here, strict=True):
            if expected.startswith("{") and expected.endswith("}") and actual:
                parameters[expected[1:-1]] = unquote(actual)
            elif expected != actual:
                break
        else:
            return route, parameters
    return None, {}


_LOCAL_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?", re.IGNORECASE)
_POST_FORM = re.compile(r"<form\b[^>]*\bmethod=[\"']?post\b[^>]*>", re.IGNORECASE)
CSRF_FIELD = "csrf_token"  # the form field; programs may send the X-CSRF-Token header instead


class Refused(Exception):
    """A request the gateway answers 403 without running anything; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def refused_host(host: str | None) -> str | None:
    """Why a request for ``host`` is refused, or None for this machine's own names."""
    if host is not None and _LOCAL_HOST.fullmatch(host.strip()):
        return None
    return "Forbidden: the local gateway answers only Host localhost, 127.0.0.1 or [::1]."


def with_csrf_token(html: str, token: str) -> str:
    """``html`` with the CSRF token in each of its POST forms."""
    field = f'<input type=hidden name={CSRF_FIELD} value="{escape(token, quote=True)}">'
    return _POST_FORM.sub(lambda form: form.group(0) + field, html)


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

    def confirm(self, result: str, owner: str) -> dict[str, Any]:
        """The app's return handler confirming ``result`` for ``owner``: status and answer."""
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
        self.csrf_token = secrets.token_urlsafe(32)  # one per process, in the page's forms
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

            def do_PUT(self) -> None:
                gateway._serve(self)

            def do_PATCH(self) -> None:
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
            refusal = refused_host(request.headers.get("Host"))
            if refusal:
                raise Refused(refusal)
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
                status, headers, payload = self._serve_local(request, parts.path, parts.query, body)
        except (sigv4.SignatureRejected, Refused) as refusal:  # no handler runs
            note = _refusal_note(refusal)
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

    def _serve_local(
        self, request: BaseHTTPRequestHandler, path: str, raw_query: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The landing page and /_local: a POST must carry the page's CSRF token."""
        form = body.decode("utf-8", "replace") if body else ""
        query = "&".join(filter(None, [raw_query, form]))
        if request.command == "POST":
            sent = request.headers.get("X-CSRF-Token") or dict(parse_qsl(query)).get(CSRF_FIELD, "")
            if not hmac.compare_digest(sent.encode(), self.csrf_token.encode()):
                raise Refused(
                    "Forbidden: a POST to the local stack needs the landing page's"
                    f" {CSRF_FIELD} (form field) or X-CSRF-Token header."
                )
        cookies = dict(
            pair.strip().split("=", 1)
            for pair in (request.headers.get("Cookie") or "").split(";")
            if "=" in pair
        )
        return self._local(request.command, path, query, cookies)

    def _landing(
        self, params: dict[str, str], cookies: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The landing page; on the return URL (capsule_result), the app's return handler."""
        confirmed = None
        if params.get("capsule_result"):  # confirmed for the user the app has signed in
            owner = cookies.get(CONFIRM_AS_COOKIE) or cookies.get(APP_USER_COOKIE) or "demo-user-1"
            confirmed = {"owner": owner, **self.control.confirm(params["capsule_result"], owner)}
        html = with_csrf_token(
            landing_page(
                self.control.connections(),
                self.control.describe(),
                params,
                self.control.pump_status_events(),
                confirmed=confirmed,
            ),
            self.csrf_token,
        )
        return (
            200,
            [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
            html.encode(),
        )

    def _local(  # noqa: PLR0912 - one branch per local endpoint
        self, method: str, path: str, query: str, cookies: dict[str, str] | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        params = dict(parse_qsl(query))
        cookies = cookies or {}
        as_json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if method in {"GET", "HEAD"} and path == "/":
            return self._landing(params, cookies)
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
            # The landing page always comes back here; return_here=0 asks for no return URL.
            comes_back = params.get("return_here", "1") == "1"
            session = self.control.connect_session(owner, return_here=comes_back)
            if "connect_url" not in session:
                return 400, as_json, json.dumps(session).encode()
            # The app "signs in" as that user; the return handler confirms for them (or, to
            # see a forwarded link refused, for someone else).
            signed_in = [
                ("Set-Cookie", f"{APP_USER_COOKIE}={owner}; Path=/; SameSite=Lax"),
                (
                    "Set-Cookie",
                    f"{CONFIRM_AS_COOKIE}=someone-else; Path=/; SameSite=Lax"
                    if params.get("confirm_as_other") == "1"
                    else f"{CONFIRM_AS_COOKIE}=; Path=/; Max-Age=0; SameSite=Lax",
                ),
            ]
            return 303, [("Location", session["connect_url"]), *signed_in], b""
        if method == "POST" and path == "/_local/call":
            result = self.control.call_capsule(params["connection_id"], params.get("path", "/site"))
            return 200, as_json, json.dumps(result).encode()
        return 404, as_json, json.dumps({"message": "Not Found"}).encode()


APP_USER_COOKIE = "local_app_user"  # the landing page's "signed-in user" (it plays the app)
CONFIRM_AS_COOKIE = "local_confirm_as"  # confirm as another user: a forwarded link's refusal


def _back_to_landing(params: dict[str, str], said: dict[str, str]) -> str:
    """The landing page again, saying what was done, with the owner the person typed."""
    kept = {"owner": params["owner"]} if params.get("owner") else {}
    return "/?" + urlencode({**said, **kept})


def _refusal_note(refusal: sigv4.SignatureRejected | Refused) -> str:
    """Why the gateway refused, for the terminal's request line (never the signature)."""
    if isinstance(refusal, sigv4.SignatureRejected):
        return f"signature refused: {refusal.reason}"
    return f"refused: {refusal.message}"


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
