"""The HTML the emulator shows a person: account picker, login, consent, errors, home.

Driving them from a script: every page carries the pending request's opaque id in a hidden
``request_id`` field; the picker has a text input ``id="subdomain"`` and one button
``id="account-<subdomain>"`` per account; the login page inputs ``id="username"`` and
``id="password"`` (an error shows in ``id="error"``); the consent page buttons ``id="allow"``
and ``id="deny"``, named ``decision``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Final

from local.capsule_emulator.store import Account
from local.capsule_emulator.wire import (
    ACCOUNT_PATH,
    CHANGES_PATH,
    DECISION_PATH,
    DISCOVERY_PATH,
    LOGIN_PATH,
    STATE_PATH,
)

_CSS: Final = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#eef1f5;"
    "color:#1f2933;margin:0}"
    "main{max-width:30rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;"
    "border-radius:10px;box-shadow:0 2px 8px rgba(0,0,0,.12)}"
    "h1{font-size:1.4rem;margin-top:0}h2{font-size:1.1rem;margin-top:1.6rem}"
    "button,input{font:inherit}"
    ".address{display:flex;align-items:center;gap:.4rem}.address input{flex:1}"
    "label{display:block;margin:.8rem 0 .3rem;font-weight:600}"
    "input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;"
    "border:1px solid #9aa5b1;border-radius:5px;font-size:1rem}"
    "button{margin-top:1rem;padding:.55rem 1.2rem;border:0;border-radius:5px;font-size:1rem;"
    "cursor:pointer;background:#2e6bd1;color:#fff}"
    "button.secondary{background:#e4e7eb;color:#1f2933}"
    ".accounts button{display:block;width:100%;text-align:left;background:#f5f7fa;"
    "color:#1f2933;border:1px solid #cbd2d9}"
    ".error{background:#fde8e8;color:#9b1c1c;padding:.6rem .8rem;border-radius:5px}"
    ".brand{color:#2e6bd1;font-weight:700;letter-spacing:.02em}"
    ".row{display:flex;gap:.8rem}"
)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<p class="brand">Capsule (emulator)</p>{body}</main></body></html>'
    )


def _hidden(request_id: str) -> str:
    return f'<input type="hidden" name="request_id" value="{_esc(request_id)}">'


def _error_block(error: str | None) -> str:
    if not error:
        return ""
    return f'<p class="error" id="error" role="alert">{_esc(error)}</p>'


def account_page(request_id: str, accounts: Iterable[Account], error: str | None = None) -> str:
    buttons = "".join(
        f'<form method="post" action="{ACCOUNT_PATH}">{_hidden(request_id)}'
        f'<input type="hidden" name="subdomain" value="{_esc(account.subdomain)}">'
        f'<button type="submit" id="account-{_esc(account.subdomain)}">'
        f"{_esc(account.site_name)} ({_esc(account.subdomain)}.capsulecrm.com)</button></form>"
        for account in accounts
    )
    body = (
        "<h1>Choose your Capsule account</h1>"
        f"{_error_block(error)}"
        f'<form method="post" action="{ACCOUNT_PATH}" id="account-form">{_hidden(request_id)}'
        '<label for="subdomain">Your Capsule account address</label>'
        '<div class="address"><input type="text" id="subdomain" name="subdomain" '
        'placeholder="yourcompany" autocomplete="off" required><span>.capsulecrm.com</span></div>'
        '<button type="submit" id="continue">Continue</button></form>'
        f'<h2>Known accounts</h2><div class="accounts">{buttons}</div>'
    )
    return page("Choose your Capsule account", body)


def login_page(request_id: str, account: Account, error: str | None = None) -> str:
    body = (
        f"<h1>Log in to {_esc(account.site_name)}</h1>"
        f"<p>{_esc(account.subdomain)}.capsulecrm.com</p>"
        f"{_error_block(error)}"
        f'<form method="post" action="{LOGIN_PATH}" id="login-form">{_hidden(request_id)}'
        '<label for="username">Username</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" '
        'autocomplete="current-password" required>'
        '<button type="submit" id="login">Log in</button></form>'
    )
    return page(f"Log in to {account.site_name}", body)


_SCOPE_TEXT: Final[Mapping[str, str]] = {
    "read": "Read your Capsule data",
    "write": "Create, change and delete your Capsule data",
    "user_preference": "Read and change your user preferences",
}


def consent_page(request_id: str, app_name: str, account: Account, scope: str) -> str:
    items = "".join(f"<li>{_esc(_SCOPE_TEXT[name])}</li>" for name in scope.split())
    body = (
        f'<h1 id="consent-title">Allow {_esc(app_name)} to access {_esc(account.site_name)}?</h1>'
        f"<p>Signed in as {_esc(account.user_name)} ({_esc(account.username)}).</p>"
        f'<p>It will be able to:</p><ul id="scopes">{items}</ul>'
        f'<form method="post" action="{DECISION_PATH}" id="decision-form">{_hidden(request_id)}'
        '<div class="row"><button type="submit" name="decision" value="allow" id="allow">'
        "Allow</button>"
        '<button type="submit" name="decision" value="deny" id="deny" class="secondary">'
        "Deny</button></div></form>"
    )
    return page("Authorise application", body)


def error_page(message: str) -> str:
    return page(
        "Authorisation error",
        f'<h1>Something went wrong</h1><p class="error" id="error">{_esc(message)}</p>',
    )


def home_page(url: str, accounts: Iterable[Account] = ()) -> str:
    changes = "".join(
        f'<form method="post" action="{CHANGES_PATH}">'
        f'<input type="hidden" name="subdomain" value="{_esc(a.subdomain)}">'
        f'<button id="change-{_esc(a.subdomain)}" class="secondary">'
        f"Create a person in {_esc(a.site_name)}</button></form>"
        for a in accounts
    )
    body = (
        "<h1>Capsule CRM emulator</h1>"
        "<p>This is a local emulator of Capsule CRM's OAuth 2.0 server and API v2, "
        "for development and tests. It is not Capsule.</p>"
        f'<p>Discovery: <a href="{_esc(url)}{DISCOVERY_PATH}">{DISCOVERY_PATH}</a><br>'
        f'State: <a href="{_esc(url)}{STATE_PATH}">{STATE_PATH}</a></p>'
        + (f"<h2>Change a record</h2><p>Its REST hooks hear of it.</p>{changes}" if changes else "")
    )
    return page("Capsule CRM emulator", body)


def redirect_page(location: str) -> str:
    return page("Redirecting", f'<p>Redirecting to <a href="{_esc(location)}">the app</a>.</p>')
