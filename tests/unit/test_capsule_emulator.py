"""The Capsule emulator in local/ speaks OAuth 2.0 and API v2 strictly, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from local.capsule_emulator import Account, CapsuleEmulator, Faults

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"
REDIRECT_URI = "http://localhost:3000/oauth/callback"
TIMEOUT = 5
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator() -> Iterator[CapsuleEmulator]:
    with CapsuleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, port=0) as emu:
        yield emu


@dataclass
class Clock:
    """Moves time.time() forward (what time-machine would do), for the emulator's threads."""

    offset: float = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    state = Clock()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + state.offset)
    return state


# ----------------------------------------------------------------------------- helpers


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
    return requests.post(
        f"{emu.url}/oauth/authorise/{path}", data=form, allow_redirects=False, timeout=TIMEOUT
    )


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


# ----------------------------------------------------------------------------- basics


def test_home_page_says_it_is_the_emulator(emulator: CapsuleEmulator) -> None:
    answer = requests.get(emulator.url + "/", timeout=TIMEOUT)
    assert answer.status_code == 200
    assert "Capsule CRM emulator" in answer.text


def test_discovery_lists_absolute_endpoints_and_methods(emulator: CapsuleEmulator) -> None:
    document = requests.get(
        f"{emulator.url}/.well-known/oauth-authorization-server", timeout=TIMEOUT
    ).json()
    assert document["authorization_endpoint"] == f"{emulator.url}/oauth/authorise"
    assert document["token_endpoint"] == f"{emulator.url}/oauth/token"
    assert document["code_challenge_methods_supported"] == ["plain", "S256"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }


def test_stop_is_idempotent_and_closes_the_socket() -> None:
    emu = CapsuleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
    url = emu.url
    emu.stop()
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=TIMEOUT)


def test_default_accounts_are_exampleco_and_acme() -> None:
    emu = CapsuleEmulator()
    assert [a.subdomain for a in emu.accounts] == ["exampleco", "acme"]
    assert emu.accounts[1] == Account("acme", "Acme Ltd", 7, "ada", "Ada Lovelace", "capsule")


# ----------------------------------------------------------------------------- authorise


def test_unknown_client_id_gets_an_error_page_not_a_redirect(emulator: CapsuleEmulator) -> None:
    answer = authorise(emulator, client_id="someone-else")
    assert (answer.status_code, answer.headers.get("Location")) == (400, None)


def test_unregistered_redirect_uri_gets_an_error_page() -> None:
    allowed = {REDIRECT_URI}
    with CapsuleEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, allowed_redirect_uris=allowed
    ) as emu:
        answer = authorise(emu, redirect_uri="https://evil.example/cb")
    assert (answer.status_code, answer.headers.get("Location")) == (400, None)


def test_bad_scope_redirects_with_invalid_scope_and_state(emulator: CapsuleEmulator) -> None:
    answer = authorise(emulator, scope="read admin")
    params = query_of(answer.headers["Location"])
    assert (answer.status_code, params["error"], params["state"]) == (
        302,
        "invalid_scope",
        "state-123",
    )


def test_bad_response_type_redirects_with_unsupported_response_type(
    emulator: CapsuleEmulator,
) -> None:
    answer = authorise(emulator, response_type="token")
    assert query_of(answer.headers["Location"])["error"] == "unsupported_response_type"


def test_bad_challenge_method_redirects_with_invalid_request(emulator: CapsuleEmulator) -> None:
    _, challenge = pkce_pair()
    answer = authorise(emulator, code_challenge=challenge, code_challenge_method="S512")
    assert query_of(answer.headers["Location"])["error"] == "invalid_request"


def test_account_picker_lists_accounts_and_has_a_subdomain_field(
    emulator: CapsuleEmulator,
) -> None:
    page = authorise(emulator).text
    assert "Choose your Capsule account" in page
    assert 'id="subdomain"' in page
    assert 'id="account-acme"' in page


def test_unknown_account_shows_the_picker_again_escaped(emulator: CapsuleEmulator) -> None:
    request_id = request_id_of(authorise(emulator))
    page = post_page(emulator, "account", request_id=request_id, subdomain="<b>nope</b>").text
    assert 'id="error"' in page
    assert "&lt;b&gt;nope&lt;/b&gt;" in page
    assert "<b>nope" not in page


def test_account_accepts_a_full_site_address(emulator: CapsuleEmulator) -> None:
    request_id = request_id_of(authorise(emulator))
    page = post_page(
        emulator, "account", request_id=request_id, subdomain="https://acme.capsulecrm.com/"
    ).text
    assert "Log in to Acme Ltd" in page


def test_wrong_password_shows_the_login_page_with_an_error(emulator: CapsuleEmulator) -> None:
    request_id = request_id_of(authorise(emulator))
    post_page(emulator, "account", request_id=request_id, subdomain="exampleco")
    page = post_page(emulator, "login", request_id=request_id, username="scott", password="x")
    assert 'id="error"' in page.text
    assert 'id="password"' in page.text


def test_consent_page_names_the_app_and_the_site(emulator: CapsuleEmulator) -> None:
    request_id = request_id_of(authorise(emulator))
    post_page(emulator, "account", request_id=request_id, subdomain="exampleco")
    page = post_page(emulator, "login", request_id=request_id, username="scott", password="capsule")
    assert "Allow Capsule Connector to access Example Co.?" in page.text


def test_allow_redirects_with_code_and_state(emulator: CapsuleEmulator) -> None:
    request_id = logged_in_request(emulator)
    answer = post_page(emulator, "decision", request_id=request_id, decision="allow")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(REDIRECT_URI + "?")
    params = query_of(answer.headers["Location"])
    assert params["state"] == "state-123"
    assert len(params["code"]) >= 32


def test_deny_redirects_with_access_denied(emulator: CapsuleEmulator) -> None:
    request_id = logged_in_request(emulator)
    answer = post_page(emulator, "decision", request_id=request_id, decision="deny")
    params = query_of(answer.headers["Location"])
    assert (params["error"], params["state"]) == ("access_denied", "state-123")
    assert "code" not in params


def test_decision_before_login_is_refused(emulator: CapsuleEmulator) -> None:
    request_id = request_id_of(authorise(emulator))
    post_page(emulator, "account", request_id=request_id, subdomain="exampleco")
    answer = post_page(emulator, "decision", request_id=request_id, decision="allow")
    assert (answer.status_code, answer.headers.get("Location")) == (400, None)


def test_a_decision_is_single_use(emulator: CapsuleEmulator) -> None:
    request_id = logged_in_request(emulator)
    post_page(emulator, "decision", request_id=request_id, decision="allow")
    again = post_page(emulator, "decision", request_id=request_id, decision="allow")
    assert again.status_code == 400


# ----------------------------------------------------------------------------- token: code


def test_code_exchange_with_pkce_s256_returns_capsule_token_json(
    emulator: CapsuleEmulator,
) -> None:
    verifier, challenge = pkce_pair()
    code = get_code(emulator, code_challenge=challenge, code_challenge_method="S256")
    answer = exchange(emulator, code, code_verifier=verifier)
    body = answer.json()
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "bearer"
    assert (body["expires_in"], body["scope"], body["subdomain"]) == (
        604799,
        "read write",
        "exampleco",
    )
    assert body["access_token"] != body["refresh_token"]


def test_code_exchange_with_pkce_plain(emulator: CapsuleEmulator) -> None:
    verifier = secrets.token_urlsafe(48)
    code = get_code(emulator, code_challenge=verifier, code_challenge_method="plain")
    assert exchange(emulator, code, code_verifier=verifier).status_code == 200


def test_client_secret_basic_is_accepted(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    answer = token_basic(emulator, CLIENT_SECRET, **form)
    assert answer.status_code == 200


def test_wrong_client_secret_is_invalid_client(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    answer = exchange(emulator, code, client_secret="wrong")
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


def test_wrong_basic_credentials_get_a_basic_challenge(emulator: CapsuleEmulator) -> None:
    answer = token_basic(emulator, "wrong", grant_type="refresh_token")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


def test_two_client_auth_methods_at_once_are_refused(emulator: CapsuleEmulator) -> None:
    answer = requests.post(
        f"{emulator.url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_secret": CLIENT_SECRET},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    assert answer.json()["error"] == "invalid_request"


def test_json_token_request_is_refused(emulator: CapsuleEmulator) -> None:
    answer = requests.post(
        f"{emulator.url}/oauth/token",
        json={"grant_type": "refresh_token", "client_id": CLIENT_ID, "client_secret": "s"},
        timeout=TIMEOUT,
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


def test_missing_redirect_uri_is_invalid_request(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    answer = token(emulator, grant_type="authorization_code", code=code)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


def test_wrong_redirect_uri_is_invalid_grant(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    answer = exchange(emulator, code, redirect_uri=REDIRECT_URI + "/other")
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_reused_code_is_invalid_grant(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    exchange(emulator, code)
    answer = exchange(emulator, code)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_reused_code_revokes_the_tokens_it_issued(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    first = exchange(emulator, code).json()
    exchange(emulator, code)
    assert api(emulator, "/site", first["access_token"]).status_code == 401


def test_wrong_code_verifier_is_invalid_grant(emulator: CapsuleEmulator) -> None:
    _, challenge = pkce_pair()
    code = get_code(emulator, code_challenge=challenge, code_challenge_method="S256")
    answer = exchange(emulator, code, code_verifier=pkce_pair()[0])
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_missing_code_verifier_is_invalid_grant(emulator: CapsuleEmulator) -> None:
    _, challenge = pkce_pair()
    code = get_code(emulator, code_challenge=challenge, code_challenge_method="S256")
    assert exchange(emulator, code).json()["error"] == "invalid_grant"


def test_verifier_without_challenge_is_invalid_grant(emulator: CapsuleEmulator) -> None:
    code = get_code(emulator)
    assert exchange(emulator, code, code_verifier=pkce_pair()[0]).json()["error"] == (
        "invalid_grant"
    )


def test_expired_code_is_invalid_grant(emulator: CapsuleEmulator, clock: Clock) -> None:
    code = get_code(emulator)
    clock.advance(61)
    answer = exchange(emulator, code)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_unknown_grant_type_is_unsupported_grant_type(emulator: CapsuleEmulator) -> None:
    answer = token(emulator, grant_type="password")
    assert (answer.status_code, answer.json()["error"]) == (400, "unsupported_grant_type")


def test_token_requests_are_recorded_in_order(emulator: CapsuleEmulator) -> None:
    token(emulator, grant_type="password")
    token(emulator, grant_type="refresh_token", refresh_token="r")
    assert [r["grant_type"] for r in emulator.token_requests] == ["password", "refresh_token"]


# ----------------------------------------------------------------------------- token: refresh


def test_refresh_rotates_both_tokens(emulator: CapsuleEmulator) -> None:
    first = tokens(emulator)
    second = refresh(emulator, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert api(emulator, "/site", second["access_token"]).status_code == 200


def test_old_refresh_token_is_dead_after_rotation(emulator: CapsuleEmulator) -> None:
    first = tokens(emulator)
    refresh(emulator, first["refresh_token"])
    answer = refresh(emulator, first["refresh_token"])
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_old_access_token_is_dead_after_rotation(emulator: CapsuleEmulator) -> None:
    first = tokens(emulator)
    refresh(emulator, first["refresh_token"])
    assert api(emulator, "/site", first["access_token"]).status_code == 401


def test_new_refresh_token_works(emulator: CapsuleEmulator) -> None:
    second = refresh(emulator, tokens(emulator)["refresh_token"]).json()
    assert refresh(emulator, second["refresh_token"]).status_code == 200


def test_expires_in_is_settable_over_http(emulator: CapsuleEmulator) -> None:
    requests.post(
        f"{emulator.url}/_emulator/settings", json={"access_token_lifetime": 30}, timeout=TIMEOUT
    )
    assert refresh(emulator, tokens(emulator)["refresh_token"]).json()["expires_in"] == 30


# ----------------------------------------------------------------------------- API


def test_users_current_with_bearer(emulator: CapsuleEmulator) -> None:
    user = api(emulator, "/users/current", tokens(emulator)["access_token"]).json()["user"]
    assert (user["id"], user["username"], user["name"]) == (1, "scott", "Scott Spacey")
    assert (user["locale"], user["timezone"], user["status"]) == (
        "en_GB",
        "Europe/London",
        "ACTIVE",
    )


def test_site_with_bearer(emulator: CapsuleEmulator) -> None:
    site = api(emulator, "/site", tokens(emulator)["access_token"]).json()["site"]
    assert site == {
        "url": "https://exampleco.capsulecrm.com",
        "subdomain": "exampleco",
        "name": "Example Co.",
    }


def test_api_without_token_is_401_with_www_authenticate(emulator: CapsuleEmulator) -> None:
    answer = api(emulator, "/users/current")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "message" in answer.json()


def test_api_with_unknown_token_is_401(emulator: CapsuleEmulator) -> None:
    assert api(emulator, "/site", "not-a-token").status_code == 401


def test_expired_access_token_is_401(emulator: CapsuleEmulator, clock: Clock) -> None:
    access = tokens(emulator)["access_token"]
    clock.advance(604800)
    answer = api(emulator, "/site", access)
    assert answer.status_code == 401
    assert "expired" in answer.json()["message"]


def test_rate_limit_headers_count_down(emulator: CapsuleEmulator) -> None:
    access = tokens(emulator)["access_token"]
    first = api(emulator, "/site", access).headers
    second = api(emulator, "/site", access).headers
    assert first["X-RateLimit-Limit"] == "4000"
    assert (first["X-RateLimit-Remaining"], second["X-RateLimit-Remaining"]) == ("3999", "3998")
    assert int(first["X-RateLimit-Reset"]) % 3600 == 0
    assert int(first["X-RateLimit-Reset"]) > time.time()


def test_over_the_rate_limit_is_429() -> None:
    with CapsuleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, rate_limit=2) as emu:
        access = tokens(emu)["access_token"]
        api(emu, "/site", access)
        api(emu, "/site", access)
        answer = api(emu, "/site", access)
    assert (answer.status_code, answer.json()) == (429, {"error": "rate limit reached"})
    assert answer.headers["X-RateLimit-Remaining"] == "0"


def test_token_without_read_scope_is_403(emulator: CapsuleEmulator) -> None:
    access = emulator.issue_tokens_for("exampleco", 1, scope="write")["access_token"]
    assert api(emulator, "/site", access).status_code == 403


def test_parties_paginate(emulator: CapsuleEmulator) -> None:
    access = tokens(emulator)["access_token"]
    answer = api(emulator, "/parties?page=1&perPage=5", access)
    assert len(answer.json()["parties"]) == 5
    assert answer.headers["X-Pagination-Has-More"] == "true"
    assert 'rel="next"' in answer.headers["Link"]


# ----------------------------------------------------------------------------- revocation


@pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/token/revoke"])
def test_revoke_endpoint_kills_the_whole_grant(emulator: CapsuleEmulator, path: str) -> None:
    grant = tokens(emulator)
    answer = requests.post(
        emulator.url + path,
        data={"token": grant["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200
    assert api(emulator, "/site", grant["access_token"]).status_code == 401
    assert refresh(emulator, grant["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoking_an_unknown_token_is_still_200(emulator: CapsuleEmulator) -> None:
    answer = requests.post(
        f"{emulator.url}/oauth/revoke",
        data={"token": "unknown", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200


def test_revoke_needs_client_authentication(emulator: CapsuleEmulator) -> None:
    answer = requests.post(f"{emulator.url}/oauth/revoke", data={"token": "x"}, timeout=TIMEOUT)
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


def test_user_revoking_the_app_kills_its_tokens(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    assert emulator.revoke_account_grants("exampleco") == 1
    assert api(emulator, "/site", grant["access_token"]).status_code == 401


def test_revoke_helper_reports_whether_it_found_a_grant(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    assert (emulator.revoke(grant["access_token"]), emulator.revoke(grant["access_token"])) == (
        True,
        False,
    )


# ----------------------------------------------------------------------------- faults


def test_latency_fault_delays_the_answer(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("latency", seconds=0.3)
    started = time.monotonic()
    answer = token(emulator, grant_type="password")
    assert time.monotonic() - started >= 0.3
    assert answer.json()["error"] == "unsupported_grant_type"


def test_status_fault_answers_that_status(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", status=502)
    answer = token(emulator, grant_type="refresh_token", refresh_token="r")
    assert (answer.status_code, answer.json()["error"]) == (502, "server_error")


def test_rate_limit_fault_answers_429_with_headers(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("rate_limit", target="api", reset_in=30)
    answer = api(emulator, "/site", tokens(emulator)["access_token"])
    assert answer.status_code == 429
    assert int(answer.headers["X-RateLimit-Reset"]) >= int(time.time()) + 29


def test_malformed_fault_answers_non_json(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("malformed")
    answer = token(emulator, grant_type="password")
    assert (answer.status_code, answer.text) == (200, "<html>oops")
    assert answer.headers["Content-Type"] == "application/json"


def test_invalid_grant_fault_refuses_a_good_refresh(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    emulator.faults.add("invalid_grant")
    assert refresh(emulator, grant["refresh_token"]).json()["error"] == "invalid_grant"


def test_drop_fault_closes_the_connection(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("drop")
    with pytest.raises(requests.ConnectionError):
        token(emulator, grant_type="password")


def test_fault_is_used_up_after_times(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", status=500, times=2)
    statuses = [token(emulator, grant_type="password").status_code for _ in range(3)]
    assert statuses == [500, 500, 400]


def test_fault_for_another_target_is_left_alone(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", target="api", status=503)
    assert token(emulator, grant_type="password").status_code == 400
    assert len(emulator.faults) == 1


def test_any_target_hits_the_api_too(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", target="any", status=503)
    assert api(emulator, "/site", "whatever").status_code == 503


def test_faults_over_http(emulator: CapsuleEmulator) -> None:
    created = requests.post(
        f"{emulator.url}/_emulator/faults",
        json={"kind": "status", "target": "token", "times": 1, "status": 503},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201
    assert token(emulator, grant_type="password").status_code == 503


def test_delete_clears_faults_over_http(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("drop", times=None)
    requests.delete(f"{emulator.url}/_emulator/faults", timeout=TIMEOUT)
    assert token(emulator, grant_type="password").status_code == 400


def test_bad_fault_over_http_is_400(emulator: CapsuleEmulator) -> None:
    answer = requests.post(
        f"{emulator.url}/_emulator/faults", json={"kind": "meteor"}, timeout=TIMEOUT
    )
    assert answer.status_code == 400


def test_faults_reject_parameters_they_do_not_take() -> None:
    with pytest.raises(ValueError, match="latency faults take no status"):
        Faults().add("latency", status=500)


# ----------------------------------------------------------------------------- control plane


def test_state_counts_grants_and_holds_no_secrets(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    token(emulator, grant_type="password")
    answer = requests.get(f"{emulator.url}/_emulator/state", timeout=TIMEOUT)
    state = answer.json()
    assert state["accounts"]["exampleco"]["live_grants"] == 1
    assert state["token_requests"] == 1
    for secret in (grant["access_token"], grant["refresh_token"], CLIENT_SECRET, "capsule"):
        assert secret not in answer.text


def test_cli_serves_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.capsule_emulator", "--port", "0", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        assert requests.get(url + "/", timeout=TIMEOUT).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
