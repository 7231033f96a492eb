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
from datetime import UTC, datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.lambda_container import Invoke
from local.stack import ACCOUNT, Route


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

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class Gateway:
    def __init__(
        self,
        routes: list[Route],
        invoke: Invoke,
        control: LocalControl,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
    ) -> None:
        self.routes = {(route.method, route.path): route for route in routes}
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

        return Handler

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        route = self.routes.get((request.command, parts.path))
        try:
            if route is not None:
                event = http_api_event(
                    method=request.command,
                    raw_path=parts.path,
                    raw_query=parts.query,
                    headers=dict(request.headers.items()),
                    body=body,
                    route_key=f"{route.method} {route.path}",
                    source_ip=request.client_address[0],
                )
                status, headers, payload = _response_parts(self.invoke(route.function, event))
            else:
                status, headers, payload = self._local(request.command, parts.path, parts.query)
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

    def _local(
        self, method: str, path: str, query: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        params = dict(parse_qsl(query))
        as_json = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if method in {"GET", "HEAD"} and path == "/":
            html = landing_page(self.control.connections(), self.control.describe(), params)
            return (
                200,
                [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
                html.encode(),
            )
        if method == "GET" and path == "/_local/connections":
            return 200, as_json, json.dumps(self.control.connections()).encode()
        if method == "GET" and path == "/_local/stack":
            return 200, as_json, json.dumps(self.control.describe()).encode()
        if method == "POST" and path == "/_local/refresh":
            result = self.control.refresh_now(params.get("connection_id") or None)
            if params.get("back") == "1":
                return 303, [("Location", "/?refreshed=1")], b""
            return 200, as_json, json.dumps(result).encode()
        if method == "POST" and path == "/_local/disconnect":
            result = self.control.disconnect(params["connection_id"])
            if params.get("back") == "1":
                return 303, [("Location", "/?refreshed=1")], b""
            return 200, as_json, json.dumps(result).encode()
        if method == "POST" and path == "/_local/call":
            result = self.control.call_capsule(params["connection_id"], params.get("path", "/site"))
            return 200, as_json, json.dumps(result).encode()
        return 404, as_json, json.dumps({"message": "Not Found"}).encode()


_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1d2630}
main{max-width:62rem;margin:6vh auto;padding:2rem;background:#fff;border-radius:12px;
box-shadow:0 8px 24px rgba(0,0,0,.06)}
h1{font-size:1.5rem;margin-top:0}table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e5e7eb;font-size:.9rem}
.button,button{font:inherit;display:inline-block;padding:.55rem 1rem;border-radius:8px;border:0;
background:#2563eb;color:#fff;text-decoration:none;font-weight:600;cursor:pointer;white-space:nowrap}
h2{font-size:1.1rem;margin-top:1.5rem}th{white-space:nowrap}
button.secondary{background:#475569}.note{color:#56606b;font-size:.85rem}
.status-active{color:#1f7a3f}.status-needs_reauth{color:#a8321e}form{display:inline}
.actions{white-space:nowrap}.actions form+form{margin-left:.4rem}
"""


def _when(epoch: int | None) -> str:
    if not epoch:
        return "never"
    left = epoch - time.time()
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if left > 0:
        return f"{stamp} (in {left / 3600:.1f} h)"
    return f"{stamp} ({-left / 3600:.1f} h ago)"


def _action(path: str, connection_id: str, label: str, css: str = "") -> str:
    target = f"/_local/{path}?back=1&connection_id={connection_id}"
    return (
        f'<form method=post action="{escape(target, quote=True)}">'
        f'<button class="{css}">{escape(label)}</button></form>'
    )


def _row(c: dict[str, Any]) -> str:
    actions = ""
    if c["status"] == "active":
        actions = _action("refresh", c["connection_id"], "Refresh now") + _action(
            "disconnect", c["connection_id"], "Disconnect", "secondary"
        )
    return (
        "<tr>"
        f"<td>{escape(c['site_name'])}<br><span class=note>{escape(c['connection_id'])}</span></td>"
        f"<td>{escape(c['user_name'])}</td>"
        f'<td class="status-{escape(c["status"])}" data-testid=status>{escape(c["status"])}</td>'
        f"<td data-testid=expires>{escape(_when(c['expires_at']))}</td>"
        f"<td data-testid=last-refresh>{escape(_when(c.get('last_refreshed_at')))}</td>"
        f"<td class=actions>{actions}</td>"
        "</tr>"
    )


def landing_page(
    connections: list[dict[str, Any]], stack: dict[str, Any], params: dict[str, str]
) -> str:
    rows = "".join(_row(connection) for connection in connections)
    table = (
        "<table><thead><tr><th>Capsule site</th><th>User</th><th>Status</th>"
        "<th>Access token expires</th><th>Last refresh</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if connections
        else "<p class=note>No connection yet.</p>"
    )
    flash = (
        "<p class=note id=flash>Done: the table shows the connections as they are now.</p>"
        if params.get("refreshed")
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>Capsule connector (local)</title>"
        f"<style>{_CSS}</style></head><body><main>"
        "<h1>Capsule CRM connector — local stack</h1>"
        f"<p>Capsule: <code>{escape(stack['capsule_base_url'])}</code>"
        f" · AWS: moto at <code>{escape(stack['aws_endpoint'])}</code></p>"
        '<p><a class=button id=connect href="/auth/start">Connect Capsule CRM</a></p>'
        f"<h2>Connections</h2>{flash}{table}"
        '<form method=post action="/_local/refresh?back=1">'
        "<button class=secondary id=run-refresh>Run the scheduled refresh now</button></form>"
        f"<p class=note>The scheduled refresh also runs every {stack['schedule_seconds'] // 60}"
        " minutes, as template.yaml says; it refreshes what is due.</p>"
        "</main></body></html>"
    )
