"""The local stack's landing page: it plays the app that integrates the connector.

It creates a connect session for an owner of its own (signed, as the app's backend would),
sends the person through Capsule, and shows what came back on its return URL beside the
connections as the connector stores them.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

DEFAULT_OWNER = "demo-user-1"

# The tab's icon, served at /favicon.ico so that no page's request for one gets a 404.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#2563eb"/>'
    b'<path d="M11 5.5a3.5 3.5 0 1 0 0 5" fill="none" stroke="#fff" stroke-width="2"/></svg>'
)

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1d2630}
main{max-width:72rem;margin:6vh auto;padding:2rem;background:#fff;border-radius:12px;
box-shadow:0 8px 24px rgba(0,0,0,.06);box-sizing:border-box}
td .note,td.note,code{overflow-wrap:anywhere}
h1{font-size:1.5rem;margin-top:0}table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e5e7eb;font-size:.9rem}
.button,button{font:inherit;display:inline-block;padding:.55rem 1rem;border-radius:8px;border:0;
background:#2563eb;color:#fff;text-decoration:none;font-weight:600;cursor:pointer;white-space:nowrap}
h2{font-size:1.1rem;margin-top:1.5rem}th{white-space:nowrap}
button.secondary{background:#475569}.note{color:#56606b;font-size:.85rem}
.status-active{color:#1f7a3f}.status-needs_reauth{color:#a8321e}form{display:inline}
.actions form{display:block}.actions form+form{margin-top:.4rem}.actions button{width:100%}
"""


def _when(epoch: int | None) -> str:
    if not epoch:
        return "never"
    left = epoch - time.time()
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if left > 0:
        return f"{stamp} (in {left / 3600:.1f} h)"
    return f"{stamp} ({-left / 3600:.1f} h ago)"


def _action(path: str, connection_id: str, owner: str, label: str, css: str = "") -> str:
    target = "/_local/{}?{}".format(
        path, urlencode({"back": "1", "connection_id": connection_id, "owner": owner})
    )
    return (
        f'<form method=post action="{escape(target, quote=True)}">'
        f'<button class="{css}">{escape(label)}</button></form>'
    )


def _row(c: dict[str, Any], owner: str) -> str:
    actions = ""
    if c["status"] == "active":
        actions = _action("refresh", c["connection_id"], owner, "Refresh now") + _action(
            "disconnect", c["connection_id"], owner, "Disconnect", "secondary"
        )
    # A disconnected connection holds no token: it has no expiry to show.
    expires = "—" if c["status"] == "disconnected" else _when(c["expires_at"])
    return (
        "<tr>"
        f"<td data-testid=owner>{escape(c.get('owner', ''))}</td>"
        f"<td>{escape(c['site_name'])}<br><span class=note>{escape(c['connection_id'])}</span></td>"
        f"<td>{escape(c['user_name'])}</td>"
        f'<td class="status-{escape(c["status"])}" data-testid=status>{escape(c["status"])}</td>'
        f"<td data-testid=expires>{escape(expires)}</td>"
        f"<td data-testid=last-refresh>{escape(_when(c.get('last_refreshed_at')))}</td>"
        f"<td class=actions>{actions}</td>"
        "</tr>"
    )


def _received(params: dict[str, str]) -> str:
    """What came back on the return URL; an app would verify it through the API."""
    shown = {
        k: "(a one-time code; never shown)" if k == "capsule_result" else v
        for k, v in params.items()
        if k.startswith("capsule_")
    }
    if not shown:
        return ""
    items = "".join(
        f"<li><code>{escape(k)}</code> = <code data-testid={escape(k)}>{escape(v)}</code></li>"
        for k, v in sorted(shown.items())
    )
    return (
        "<div id=app-received><p>Back in the app, its return URL received:</p>"
        f"<ul>{items}</ul><p class=note>An app trusts only what it reads back from the"
        " connector (the management API or the layer), never these parameters alone.</p></div>"
    )


def _confirmed(confirmed: dict[str, Any] | None) -> str:
    """The return handler's confirm call and the connector's answer."""
    if confirmed is None:
        return ""
    body = confirmed["body"]
    verdict = {
        200: "Confirmed: the connection is now active for this user.",
        403: "Refused: this sign-in came from another user's connect link (a forwarded"
        " link). The connection was discarded and its grant revoked at Capsule.",
        404: "No connection waits for this result (unknown, expired, or discarded).",
    }.get(confirmed["status"], "The connector answered with an error.")
    call = "POST /connect-sessions/confirm (SigV4)\n" + json.dumps(
        {"result": "<capsule_result>", "owner": confirmed["owner"]}
    )
    return (
        f"<div id=app-confirmed data-status={confirmed['status']}>"
        "<p>The app's return handler confirmed the result for the user it has signed in:</p>"
        f"<pre>{escape(call)}</pre>"
        f"<p>Answer: <code data-testid=confirm-status>{confirmed['status']}</code></p>"
        f"<pre data-testid=confirm-answer>{escape(json.dumps(body, indent=2))}</pre>"
        f"<p data-testid=confirm-verdict>{escape(verdict)}</p></div>"
    )


def _what(detail: dict[str, Any]) -> str:
    """A status event's reason, or which record a Capsule Record Changed event is about."""
    if "record_type" in detail:
        return (
            f"{detail.get('event', '')} {detail.get('record_type', '')} {detail.get('record_id')}"
        )
    return str(detail.get("reason") or "")


def _flash(params: dict[str, str]) -> str:
    """What the last button did, in words of its own."""
    done, connection_id = params.get("done"), params.get("connection_id", "")
    outcome, error = params.get("outcome", ""), params.get("error", "")
    if done == "refreshed" and outcome == "refreshed":
        text = f"Refreshed {connection_id}: Capsule issued a new access token (see its expiry)."
    elif done == "refreshed":
        text = f"Refresh of {connection_id}: {outcome or 'nothing done'}."
    elif done == "disconnected" and not error:
        text = f"Disconnected {connection_id}: revoked at Capsule and its tokens forgotten."
    elif done == "disconnected":
        text = f"Disconnect of {connection_id} failed ({error}): nothing changed."
    elif done == "scheduled":
        text = (
            f"The scheduled refresh ran: {params.get('due', '0')} due,"
            f" {params.get('failures', '0')} failed."
        )
    else:
        return ""
    return f"<p class=note id=flash data-done={escape(done or '', quote=True)}>{escape(text)}</p>"


def _events(events: list[dict[str, Any]]) -> str:
    """The latest status events, as an app's EventBridge rule would receive them."""
    if not events:
        return "<p class=note id=no-events>No status event yet.</p>"
    rows = "".join(
        "<tr data-testid=event>"
        f"<td>{escape(str(e.get('time', '')))}</td>"
        f"<td data-testid=detail-type>{escape(str(e.get('detail-type', '')))}</td>"
        f"<td>{escape(str(e['detail'].get('owner', '')))}</td>"
        f"<td class=note>{escape(str(e['detail'].get('connection_id', '')))}</td>"
        f"<td>{escape(str(e['detail'].get('previous_status') or '—'))} →"
        f" {escape(str(e['detail'].get('status', '')))}</td>"
        f"<td>{escape(_what(e['detail']))}</td>"
        f"<td>{escape(str(e['detail'].get('version', '')))}</td>"
        "</tr>"
        for e in events
    )
    return (
        "<table id=events><thead><tr><th>Time</th><th>Event</th><th>Owner</th>"
        "<th>Connection</th><th>Status</th><th>Reason</th><th>Version</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def landing_page(
    connections: list[dict[str, Any]],
    stack: dict[str, Any],
    params: dict[str, str],
    events: list[dict[str, Any]] | None = None,
    *,
    confirmed: dict[str, Any] | None = None,
) -> str:
    owner = params.get("owner") or DEFAULT_OWNER
    rows = "".join(_row(connection, owner) for connection in connections)
    table = (
        "<table id=connections><thead><tr><th>Owner</th><th>Capsule site</th><th>User</th>"
        "<th>Status</th>"
        "<th>Access token expires</th><th>Last refresh</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if connections
        else "<p class=note>No connection yet.</p>"
    )
    flash = _flash(params)
    run_query = urlencode({"back": "1", "owner": owner})
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>Capsule connector (local)</title>"
        '<link rel=icon href="/favicon.ico" type="image/svg+xml">'
        f"<style>{_CSS}</style></head><body><main>"
        "<h1>Capsule CRM connector — local stack</h1>"
        f"<p>Capsule: <code>{escape(stack['capsule_base_url'])}</code>"
        f" · AWS: moto at <code>{escape(stack['aws_endpoint'])}</code></p>"
        "<h2>Your app</h2>"
        "<p class=note>This page plays the app: its backend creates a connect session for one"
        " of its users (a signed POST /connect-sessions) and sends the person to the link."
        " Back here, its return handler confirms the new connection for the user it has"
        " signed in (a signed POST /connect-sessions/confirm).</p>"
        '<form method=post action="/_local/connect">'
        "<label>Owner (your app's user id) <input name=owner id=owner"
        f' value="{escape(owner, quote=True)}" required></label> '
        "<label><input type=checkbox name=confirm_as_other id=confirm-as-other value=1>"
        " confirm as another user (a forwarded link)</label> "
        "<button id=connect>Connect Capsule CRM</button></form>"
        f"{_received(params)}{_confirmed(confirmed)}"
        f"<h2>Connections</h2>{flash}{table}"
        f'<form method=post action="/_local/refresh?{escape(run_query, quote=True)}">'
        "<button class=secondary id=run-refresh>Run the scheduled refresh now</button></form>"
        f"<p class=note>The scheduled refresh also runs every {stack['schedule_seconds'] // 60}"
        " minutes, as template.yaml says; it refreshes what is due.</p>"
        "<h2>Status events</h2>"
        "<p class=note>What EventsFunction published from the connections table's stream,"
        " and Capsule Record Changed events from the emulator's REST hooks (create a person"
        " on its home page), newest first, as a queue behind an EventBridge rule receives"
        " them.</p>"
        f"{_events(events or [])}"
        "</main></body></html>"
    )
