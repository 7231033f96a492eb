"""Driving the Capsule emulator over HTTP as a client would, for the emulator's own tests."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from local.capsule_emulator import CapsuleEmulator

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"
REDIRECT_URI = "http://localhost:3000/oauth/callback"
TIMEOUT = 5


@dataclass
class Clock:
    """Moves time.time() forward (what time-machine would do), for the emulator's threads."""

    offset: float = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorise(emu: CapsuleEmulator, **overrides: str | None) -> requests.Response:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "state-123",
        "scope": "read write",
    }
    params.update(overrides)
    sent = {key: value for key, value in params.items() if value is not None}
    return requests.get(
        f"{emu.url}/oauth/authorise", params=sent, allow_redirects=False, timeout=TIMEOUT
    )


def request_id_of(page: requests.Response) -> str:
    match = re.search(r'name="request_id" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return match.group(1)


def post_page(emu: CapsuleEmulator, path: str, **form: str) -> requests.Response:
    """POST a sign-in form; its 303 (post/redirect/get) is followed to the next page, a
    redirect back to the app is not."""
    answer = requests.post(
        f"{emu.url}/oauth/authorise/{path}", data=form, allow_redirects=False, timeout=TIMEOUT
    )
    if answer.status_code == 303:
        return requests.get(emu.url + answer.headers["Location"], timeout=TIMEOUT)
    return answer


def logged_in_request(emu: CapsuleEmulator, **overrides: str | None) -> str:
    """Drive the picker and the login page; returns the request id awaiting a decision."""
    request_id = request_id_of(authorise(emu, **overrides))
    post_page(emu, "account", request_id=request_id, subdomain="exampleco")
    page = post_page(emu, "login", request_id=request_id, username="scott", password="capsule")
    assert 'id="allow"' in page.text
    return request_id


def query_of(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def get_code(emu: CapsuleEmulator, **overrides: str | None) -> str:
    request_id = logged_in_request(emu, **overrides)
    answer = post_page(emu, "decision", request_id=request_id, decision="allow")
    return query_of(answer.headers["Location"])["code"]


def token(emu: CapsuleEmulator, **form: str) -> requests.Response:
    """A token request with client_secret_post."""
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return requests.post(f"{emu.url}/oauth/token", data=body, timeout=TIMEOUT)


def token_basic(emu: CapsuleEmulator, secret: str, **form: str) -> requests.Response:
    """A token request with client_secret_basic."""
    auth = (CLIENT_ID, secret)
    return requests.post(f"{emu.url}/oauth/token", data=form, auth=auth, timeout=TIMEOUT)


def exchange(emu: CapsuleEmulator, code: str, **extra: str) -> requests.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    return token(emu, **{**form, **extra})


def refresh(emu: CapsuleEmulator, refresh_token: str) -> requests.Response:
    return token(emu, grant_type="refresh_token", refresh_token=refresh_token)


def api(emu: CapsuleEmulator, path: str, access_token: str | None = None) -> requests.Response:
    headers = {} if access_token is None else {"Authorization": f"Bearer {access_token}"}
    return requests.get(f"{emu.url}/api/v2{path}", headers=headers, timeout=TIMEOUT)


def tokens(emu: CapsuleEmulator) -> dict[str, Any]:
    return emu.issue_tokens_for("exampleco", 1)
