"""The Capsule emulator's sign-in pages: authorise, account, login, consent, decision."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from local.capsule_emulator import Account, CapsuleEmulator
from tests.support.emulator_client import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    TIMEOUT,
    authorise,
    logged_in_request,
    pkce_pair,
    post_page,
    query_of,
    request_id_of,
)

ROOT = Path(__file__).resolve().parents[2]


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


def test_default_accounts_are_exampleco_acme_and_northwind_whose_user_is_no_admin() -> None:
    emu = CapsuleEmulator()
    assert [a.subdomain for a in emu.accounts] == ["exampleco", "acme", "northwind"]
    assert emu.accounts[1] == Account("acme", "Acme Ltd", 7, "ada", "Ada Lovelace", "capsule")
    assert [a.admin for a in emu.accounts] == [True, True, False]


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


def test_answering_the_consent_again_gives_a_new_code_with_the_same_state(
    emulator: CapsuleEmulator,
) -> None:
    request_id = logged_in_request(emulator)
    first = post_page(emulator, "decision", request_id=request_id, decision="allow")
    # Back to the consent page (a GET: nothing to resubmit), then Allow again.
    page = requests.get(
        f"{emulator.url}/oauth/authorise/step", params={"request_id": request_id}, timeout=10
    )
    assert "Allow Capsule Connector to access Example Co.?" in page.text
    again = post_page(emulator, "decision", request_id=request_id, decision="allow")
    codes = [query_of(a.headers["Location"]) for a in (first, again)]
    assert codes[0]["state"] == codes[1]["state"] == "state-123"
    assert codes[0]["code"] != codes[1]["code"]


def test_every_sign_in_form_is_answered_with_a_redirect_to_a_get_page(
    emulator: CapsuleEmulator,
) -> None:
    request_id = request_id_of(authorise(emulator))
    for path, form in (
        ("account", {"subdomain": "nope"}),
        ("account", {"subdomain": "exampleco"}),
        ("login", {"username": "scott", "password": "x"}),
        ("login", {"username": "scott", "password": "capsule"}),
    ):
        answer = requests.post(
            f"{emulator.url}/oauth/authorise/{path}",
            data={"request_id": request_id, **form},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 303
        assert answer.headers["Location"].startswith("/oauth/authorise/step?request_id=")
