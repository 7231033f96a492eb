"""Approve (or deny) in the Capsule emulator over plain HTTP, as a person would in a browser."""

from __future__ import annotations

import re
from html import unescape

import requests


def _request_id(page: str) -> str:
    match = re.search(r'name="request_id"\s+value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"\s+name="request_id"', page
    )
    if not match:
        raise RuntimeError("the Capsule page has no request_id field")
    return unescape(match.group(1))


def approve(
    http: requests.Session,
    authorise_url: str,
    *,
    subdomain: str = "exampleco",
    username: str = "scott",
    password: str = "capsule",
    allow: bool = True,
    timeout: float = 10,
) -> str:
    """Walk account picker -> login -> allow/deny; return the redirect back to the connector."""
    page = http.get(authorise_url, timeout=timeout)
    page.raise_for_status()
    base = authorise_url.split("/oauth/authorise", maxsplit=1)[0]
    request_id = _request_id(page.text)
    steps = [
        ("/oauth/authorise/account", {"subdomain": subdomain}),
        ("/oauth/authorise/login", {"username": username, "password": password}),
    ]
    for path, form in steps:
        answer = http.post(
            f"{base}{path}", data={"request_id": request_id, **form}, timeout=timeout
        )
        answer.raise_for_status()
        request_id = _request_id(answer.text)
    decision = http.post(
        f"{base}/oauth/authorise/decision",
        data={"request_id": request_id, "decision": "allow" if allow else "deny"},
        allow_redirects=False,
        timeout=timeout,
    )
    if decision.status_code != 302:
        raise RuntimeError(f"Capsule answered {decision.status_code} to the decision")
    return decision.headers["Location"]
