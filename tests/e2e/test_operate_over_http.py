"""The management API and status events end to end: signed calls through the local gateway
to the handlers, the emulator behind them, and the stream pumped into EventsFunction."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from local.deployment import LOCAL_CALLER, signed_request
from local.sigv4 import KnownCredentials
from tests.e2e.test_local_stack import connect
from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.e2e

ROUTES = [
    ("GET", "/connections?owner=e2e-ops"),
    ("GET", "/connections/cc_0123"),
    ("POST", "/connections/cc_0123/access-token"),
    ("DELETE", "/connections/cc_0123"),
]


@pytest.fixture
def http(local_deployment: RunningDeployment) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["X-CSRF-Token"] = local_deployment.csrf_token()  # as the page's forms
        yield session


def events_of(stack: RunningDeployment, connection_id: str, count: int) -> list[dict[str, Any]]:
    """The status events of one connection, oldest first, once ``count`` have arrived."""
    deadline = time.monotonic() + 10
    while True:
        shown = requests.get(f"{stack.url}/_local/events", timeout=10).json()
        mine = [e for e in reversed(shown) if e["detail"]["connection_id"] == connection_id]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def test_an_app_lists_reads_uses_and_disconnects_a_connection_and_hears_of_it(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    api = local_deployment.url
    page = connect(local_deployment, http, owner="e2e-ops", subdomain="acme", username="ada")
    connection_id = parse_qs(urlsplit(page.headers["Location"]).query)["capsule_connection_id"][0]

    listed = signed_request("GET", f"{api}/connections?owner=e2e-ops", LOCAL_CALLER)
    one = signed_request("GET", f"{api}/connections/{connection_id}", LOCAL_CALLER)
    token = signed_request("POST", f"{api}/connections/{connection_id}/access-token", LOCAL_CALLER)

    assert listed.status_code == 200
    assert [c["connection_id"] for c in listed.json()["connections"]] == [connection_id]
    assert one.json()["status"] == "active"
    assert one.headers["Cache-Control"] == "no-store"
    assert token.status_code == 200
    issued = token.json()
    site = requests.get(
        f"{issued['api_base_url']}/site",
        headers={"Authorization": f"Bearer {issued['access_token']}"},
        timeout=10,
    )
    assert site.json()["site"]["subdomain"] == "acme"

    gone = signed_request("DELETE", f"{api}/connections/{connection_id}", LOCAL_CALLER)
    after = signed_request("POST", f"{api}/connections/{connection_id}/access-token", LOCAL_CALLER)

    assert gone.status_code == 204
    assert (after.status_code, after.json()["error"]) == (409, "reauthorization_required")
    events = events_of(local_deployment, connection_id, 2)
    assert [e["detail-type"] for e in events] == [
        "Connection Created",
        "Connection Disconnected",
    ]
    assert issued["access_token"] not in str(events)
    landing = requests.get(f"{api}/", timeout=10).text
    assert "Connection Disconnected" in landing


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_the_gateway_refuses_unsigned_and_wrongly_signed_management_calls(
    local_deployment: RunningDeployment, method: str, path: str
) -> None:
    url = f"{local_deployment.url}{path}"
    stranger = KnownCredentials("local", "not-the-secret", LOCAL_CALLER.account_id)

    unsigned = requests.request(method, url, timeout=10)
    forged = signed_request(method, url, stranger)

    assert (unsigned.status_code, forged.status_code) == (403, 403)
    assert "access_token" not in unsigned.text + forged.text
