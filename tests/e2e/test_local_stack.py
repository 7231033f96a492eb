"""End to end over real HTTP: the local stack (gateway, handlers, moto server, emulator)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from capsule_oauth import owners
from local.consent import approve
from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(local_deployment: RunningDeployment) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["X-CSRF-Token"] = local_deployment.csrf_token()  # as the page's forms
        yield session
    requests.delete(f"{local_deployment.capsule_url}/_emulator/faults", timeout=5)


def title(page: requests.Response) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page.text)
    return match.group(1) if match else ""


def start(
    stack: RunningDeployment, http: requests.Session, owner: str = "anonymous"
) -> tuple[str, str]:
    """The landing page (the app) creates a connect session for ``owner``; its link, opened,
    answers (where Capsule is, the binding cookie to send back)."""
    made = http.post(
        f"{stack.url}/_local/connect",
        data={"owner": owner, "return_here": "1", "csrf_token": stack.csrf_token()},
        allow_redirects=False,
        timeout=10,
    )
    assert made.status_code == 303, made.text
    assert "/auth/start?session=" in made.headers["Location"]
    response = http.get(made.headers["Location"], allow_redirects=False, timeout=10)
    assert response.status_code == 302
    # A Secure cookie is not sent over plain http by requests; a browser on localhost does.
    cookie = response.headers["Set-Cookie"].split(";")[0]
    return response.headers["Location"], cookie


def connection(stack: RunningDeployment, connection_id: str) -> dict[str, Any] | None:
    listed: list[dict[str, Any]] = requests.get(
        f"{stack.url}/_local/connections", timeout=10
    ).json()
    return next((c for c in listed if c["connection_id"] == connection_id), None)


def connect(
    stack: RunningDeployment,
    http: requests.Session,
    *,
    subdomain: str = "exampleco",
    username: str = "scott",
    allow: bool = True,
    owner: str = "anonymous",
    confirm: bool = True,
) -> requests.Response:
    """Connect through the landing page and the emulator: the callback's answer. With
    ``confirm``, the browser then lands on the return URL, whose handler confirms it."""
    location, cookie = start(stack, http, owner)
    back = approve(http, location, subdomain=subdomain, username=username, allow=allow)
    page = http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
    if confirm and "capsule_result=" in page.headers.get("Location", ""):
        http.get(f"{stack.url}{page.headers['Location']}", timeout=10).raise_for_status()
    return page


def test_connect_refresh_and_call_capsule(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    page = connect(local_deployment, http, owner="e2e-user-1", confirm=False)  # its own owner

    assert page.status_code == 303
    back = parse_qs(urlsplit(page.headers["Location"]).query)
    connection_id = owners.connection_id_for("e2e-user-1", "exampleco", "1")
    assert back["owner"] == ["e2e-user-1"]  # the landing page's own query, kept
    assert back["capsule_connection_id"] == [connection_id]
    assert back["capsule_status"] == ["connected"]
    assert connection(local_deployment, connection_id)["status"] == "pending"  # type: ignore[index]
    # The landing page's return handler confirms for the user it signed in (e2e-user-1).
    landing = http.get(f"{local_deployment.url}{page.headers['Location']}", timeout=10)
    assert "data-testid=capsule_status>connected<" in landing.text
    assert "data-testid=confirm-status>200<" in landing.text
    assert back["capsule_result"][0] not in landing.text
    before = connection(local_deployment, connection_id)
    assert before is not None
    assert before["status"] == "active"

    refreshed = http.post(
        f"{local_deployment.url}/_local/refresh",
        params={"connection_id": connection_id},
        timeout=10,
    ).json()
    assert refreshed["outcome"] == "refreshed"
    after = connection(local_deployment, connection_id)
    assert after is not None
    assert after["version"] == before["version"] + 1
    assert after["last_refreshed_at"] is not None

    called = http.post(
        f"{local_deployment.url}/_local/call",
        params={"connection_id": connection_id, "path": "/site"},
        timeout=10,
    ).json()
    assert called["body"]["site"]["name"] == "Example Co."
    assert called["rate_limit_remaining"] < 4000


def test_a_forwarded_link_confirmed_for_another_user_is_refused_on_the_landing_page(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    made = http.post(
        f"{local_deployment.url}/_local/connect",
        data={"owner": "e2e-forwarder", "confirm_as_other": "1"},
        allow_redirects=False,
        timeout=10,
    )
    response = http.get(made.headers["Location"], allow_redirects=False, timeout=10)
    cookie = response.headers["Set-Cookie"].split(";")[0]
    back = approve(http, response.headers["Location"], subdomain="acme", username="ada")
    page = http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
    connection_id = owners.connection_id_for("e2e-forwarder", "acme", "7")

    landing = http.get(f"{local_deployment.url}{page.headers['Location']}", timeout=10)

    assert "data-testid=confirm-status>403<" in landing.text
    assert "owner_mismatch" in landing.text
    assert connection(local_deployment, connection_id) is None


def test_the_authorise_request_carries_state_and_pkce(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    location, _ = start(local_deployment, http)

    query = parse_qs(urlsplit(location).query)
    assert urlsplit(location).path == "/oauth/authorise"
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"{local_deployment.url}/auth/callback"]


def test_denying_in_capsule_connects_nothing(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    page = connect(local_deployment, http, subdomain="acme", username="ada", allow=False)

    assert page.status_code == 303
    assert parse_qs(urlsplit(page.headers["Location"]).query)["capsule_status"] == ["denied"]
    assert connection(local_deployment, "acme:7") is None


def test_capsule_down_during_the_exchange_gives_a_clear_page(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    location, cookie = start(local_deployment, http)
    back = approve(http, location, subdomain="acme", username="ada")
    requests.post(
        f"{local_deployment.capsule_url}/_emulator/faults",
        json={"kind": "status", "target": "token", "status": 503},
        timeout=5,
    )

    page = http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)

    assert page.status_code == 502
    assert title(page) == "Capsule is unavailable"
    assert "capsule_status=error&amp;capsule_error=Unavailable" in page.text
    assert connection(local_deployment, "acme:7") is None


def test_the_scheduled_refresh_runs_through_the_function(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    report = http.post(f"{local_deployment.url}/_local/refresh", timeout=30).json()

    # make local subscribes REST hooks, so the run checks those that are due too.
    assert set(report) == {
        "due",
        "outcomes",
        "failures",
        "skipped",
        "stopped_early",
        "pending_discarded",
        "hooks",
    }
    assert report["stopped_early"] is False


def test_the_landing_page_lists_connections_and_offers_to_connect(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    connect(local_deployment, http)

    page = http.get(local_deployment.url, timeout=10)

    assert "Connect Capsule CRM" in page.text
    assert "exampleco:1" in page.text
    assert "Refresh now" in page.text


def test_the_stack_prints_no_code_or_cookie_nonce(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    connected_before = local_deployment.printed().count("Capsule account connected")
    location, cookie = start(local_deployment, http)
    back = approve(http, location)
    code = parse_qs(urlsplit(back).query)["code"][0]
    http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)

    deadline = time.monotonic() + 10
    while local_deployment.printed().count("Capsule account connected") == connected_before:
        assert time.monotonic() < deadline, "the callback's log line never arrived"
        time.sleep(0.05)
    printed = local_deployment.printed()
    assert code not in printed
    assert cookie.split("=", 1)[1] not in printed


def test_disconnect_from_the_landing_page_revokes_at_capsule(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    connect(local_deployment, http, subdomain="acme", username="ada")
    state = f"{local_deployment.capsule_url}/_emulator/state"
    live_before = requests.get(state, timeout=5).json()["accounts"]["acme"]["live_grants"]

    answer = http.post(
        f"{local_deployment.url}/_local/disconnect", params={"connection_id": "acme:7"}, timeout=10
    ).json()

    live_after = requests.get(state, timeout=5).json()["accounts"]["acme"]["live_grants"]
    assert answer["status"] == "disconnected"
    listed = connection(local_deployment, "acme:7")
    assert listed is not None
    assert listed["status"] == "disconnected"
    assert live_after == live_before - 1


def test_the_gateway_refuses_unsigned_and_wrongly_signed_calls_to_iam_routes(
    local_deployment: RunningDeployment,
) -> None:
    url = f"{local_deployment.url}/connect-sessions"
    unsigned = requests.post(url, json={"owner": "user-42"}, timeout=10)
    forged = requests.post(
        url,
        json={"owner": "user-42"},
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=local/20261128/us-east-1/"
            "execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Date": "20261128T000000Z",
        },
        timeout=10,
    )

    assert unsigned.status_code == 403
    assert forged.status_code == 403
    assert "connect_url" not in unsigned.text + forged.text


def test_curl_aws_sigv4_creates_a_connect_session(local_deployment: RunningDeployment) -> None:
    # The README's curl example, against the local stack and its local credentials.
    answer = subprocess.run(
        [
            shutil.which("curl") or "curl", "-s", "--aws-sigv4", "aws:amz:us-east-1:execute-api",
            "--user", "local:local", "-H", "Content-Type: application/json",
            "-d", '{"owner": "user-42", "return_url": "/"}',
            f"{local_deployment.url}/connect-sessions",
        ],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip

    created = json.loads(answer.stdout)
    assert created["connect_url"].startswith(f"{local_deployment.url}/auth/start?session=")
    assert created["expires_at"] > time.time()
