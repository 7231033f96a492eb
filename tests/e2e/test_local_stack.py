"""End to end over real HTTP: the local stack (gateway, handlers, moto server, emulator)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from local.consent import approve
from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(local_deployment: RunningDeployment) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
    requests.delete(f"{local_deployment.capsule_url}/_emulator/faults", timeout=5)


def title(page: requests.Response) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page.text)
    return match.group(1) if match else ""


def start(stack: RunningDeployment, http: requests.Session) -> tuple[str, str]:
    """GET /auth/start: (where Capsule is, the binding cookie to send back)."""
    response = http.get(f"{stack.url}/auth/start", allow_redirects=False, timeout=10)
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
) -> requests.Response:
    location, cookie = start(stack, http)
    back = approve(http, location, subdomain=subdomain, username=username, allow=allow)
    return http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)


def test_connect_refresh_and_call_capsule(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    page = connect(local_deployment, http)

    assert page.status_code == 200
    assert title(page) == "Connected to Example Co. as Scott Spacey"
    before = connection(local_deployment, "exampleco:1")
    assert before is not None
    assert before["status"] == "active"

    refreshed = http.post(
        f"{local_deployment.url}/_local/refresh",
        params={"connection_id": "exampleco:1"},
        timeout=10,
    ).json()
    assert refreshed["outcome"] == "refreshed"
    after = connection(local_deployment, "exampleco:1")
    assert after is not None
    assert after["version"] == before["version"] + 1
    assert after["last_refreshed_at"] is not None

    called = http.post(
        f"{local_deployment.url}/_local/call",
        params={"connection_id": "exampleco:1", "path": "/site"},
        timeout=10,
    ).json()
    assert called["body"]["site"]["name"] == "Example Co."
    assert called["rate_limit_remaining"] < 4000


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

    assert page.status_code == 403
    assert "You chose not to allow access" in page.text
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
    assert connection(local_deployment, "acme:7") is None


def test_the_scheduled_refresh_runs_through_the_function(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    report = http.post(f"{local_deployment.url}/_local/refresh", timeout=30).json()

    assert set(report) == {"due", "outcomes", "failures", "stopped_early"}
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
