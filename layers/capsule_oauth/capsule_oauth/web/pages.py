"""The pages a person sees, as API Gateway HTTP API responses.

Self-contained (no external assets), every dynamic value escaped, never cached, never
framed, and no Referer leaves the callback page (its URL carries the code). What a failure
page says comes from web/words.py, by the failure's reason.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from capsule_oauth.errors import AuthorizationFailed
from capsule_oauth.web import words

_CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f4f6f8;color:#1d2630}
main{max-width:34rem;margin:12vh auto;padding:2rem 2.25rem;background:#fff;border-radius:12px;
box-shadow:0 1px 3px rgba(0,0,0,.08),0 8px 24px rgba(0,0,0,.06)}
h1{font-size:1.4rem;margin:0 0 .75rem}
p{margin:.5rem 0}
.ok h1{color:#1f7a3f}.fail h1{color:#a8321e}
.detail{color:#56606b;font-size:.9rem}
a.button{display:inline-block;margin-top:1.25rem;padding:.6rem 1.1rem;border-radius:8px;
background:#2563eb;color:#fff;text-decoration:none;font-weight:600}
a.button:focus,a.button:hover{background:#1d4ed8}
""".strip()

_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Strict-Transport-Security": "max-age=31536000",
}


def response(
    status: int,
    body: str = "",
    *,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "statusCode": status,
        "headers": {**SECURITY_HEADERS, **(headers or {})},
        "body": body,
        "isBase64Encoded": False,
    }
    if cookies:
        result["cookies"] = cookies
    return result


def redirect(location: str, *, cookies: list[str] | None = None) -> dict[str, Any]:
    return response(302, headers={"Location": location}, cookies=cookies)


def _page(status: int, css_class: str, title: str, paragraphs: list[str], action: str) -> str:
    body = "".join(f"<p>{escape(text)}</p>" for text in paragraphs)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f'<body><main class="{css_class}" data-status="{status}"><h1>{escape(title)}</h1>'
        f"{body}{action}</main></body></html>\n"
    )


def _html(status: int, html: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    return response(
        status, html, headers={"Content-Type": "text/html; charset=utf-8", **(extra or {})}
    )


def _link(href: str, label: str) -> str:
    return f'<a class="button" href="{escape(href, quote=True)}">{escape(label)}</a>'


def connected(
    *, site_name: str, user_name: str, reconnected: bool, continue_to: str | None
) -> dict[str, Any]:
    title = f"Connected to {site_name} as {user_name}"
    lines = [
        "Your Capsule account was connected again: the new permission replaces the old one."
        if reconnected
        else "This app can now work with your Capsule account. You can close this page.",
        "You can remove this app's access at any time in your Capsule account settings.",
    ]
    action = _link(continue_to, "Continue") if continue_to else ""
    return _html(200, _page(200, "ok", title, lines, action))


def already_connected(
    *,
    site_name: str,
    user_name: str,
    back: tuple[str, str] | None,
    continue_to: str | None,
) -> dict[str, Any]:
    """A sign-in this browser completed, opened again (reload, Back, approving again)."""
    title = f"Already connected to {site_name} as {user_name}"
    lines = [
        "This sign-in was already completed in this browser: your Capsule account is"
        " connected, and nothing was changed now.",
        "Go back to the app to carry on." if back or continue_to else "You can close this page.",
    ]
    action = ""
    if back:
        action = _link(*back)
    elif continue_to:
        action = _link(continue_to, "Continue")
    return _html(200, _page(200, "ok", title, lines, action))


def failure(
    status: int,
    *,
    title: str,
    message: str,
    next_step: str,
    retry_url: str | None,
    detail: str | None = None,
    retry_after: int | None = None,
    back: tuple[str, str] | None = None,
) -> dict[str, Any]:
    lines = [message, next_step]
    action = ""
    if detail:
        action += f'<p class="detail">{escape(detail)}</p>'
    if retry_url:
        action += _link(retry_url, "Try again")
    if back:
        action += " " + _link(back[0], back[1])
    extra = {"Retry-After": str(retry_after)} if retry_after else None
    return _html(status, _page(status, "fail", title, lines, action), extra)


def refused(
    refusal: AuthorizationFailed,
    *,
    retry_url: str | None,
    back: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The page for a failed start or callback, in the words its reason calls for;
    ``back`` is (url, label) of a link back to the app."""
    said = words.for_failure(refusal)
    return failure(
        refusal.status,
        title=said.title,
        message=said.message,
        next_step=said.next_step,
        detail=said.detail,
        retry_url=retry_url,
        retry_after=refusal.retry_after,
        back=back,
    )
