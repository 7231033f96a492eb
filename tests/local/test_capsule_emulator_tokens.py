"""The Capsule emulator's token and revocation endpoints, strictly, over real HTTP."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import requests

from local.capsule_emulator import CapsuleEmulator
from tests.support.emulator_client import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    TIMEOUT,
    Clock,
    api,
    exchange,
    get_code,
    pkce_pair,
    refresh,
    token,
    token_basic,
    tokens,
)

ROOT = Path(__file__).resolve().parents[2]


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
    assert emulator.store.revoke_account_grants("exampleco") == 1
    assert api(emulator, "/site", grant["access_token"]).status_code == 401


def test_revoke_helper_reports_whether_it_found_a_grant(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    assert (
        emulator.store.revoke(grant["access_token"]),
        emulator.store.revoke(grant["access_token"]),
    ) == (
        True,
        False,
    )
