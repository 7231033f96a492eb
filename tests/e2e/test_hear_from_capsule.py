"""End to end: a change in the emulator arrives as a Capsule Record Changed event on the
local stack (make local subscribes REST hooks for every connection)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.e2e.test_local_stack import connect, connection
from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(local_deployment: RunningDeployment) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _record_changes(
    stack: RunningDeployment, connection_id: str, timeout: float = 30
) -> list[dict[str, Any]]:
    """Wait for Capsule Record Changed events of one connection on the landing page's queue
    (other tests' connections on the same site hear of the change too)."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        events = requests.get(f"{stack.url}/_local/events", timeout=10).json()
        changes = [
            e
            for e in events
            if e["detail-type"] == "Capsule Record Changed"
            and e["detail"]["connection_id"] == connection_id
        ]
        if changes:
            return changes
        time.sleep(0.5)
    return []


def test_a_person_created_in_the_emulator_arrives_as_an_event_on_the_landing_page(
    local_deployment: RunningDeployment, http: requests.Session
) -> None:
    page = connect(local_deployment, http, owner="e2e-hooks")
    assert page.status_code == 303
    query = parse_qs(urlsplit(page.headers["Location"]).query)
    connection_id = query["capsule_connection_id"][0]
    found = connection(local_deployment, connection_id)
    assert found is not None
    if found["hooks"] == "failing":  # a busy machine: subscribing took over its 3 s
        requests.post(f"{local_deployment.url}/_local/refresh", timeout=60)  # the run does it
        found = connection(local_deployment, connection_id) or {}
    assert found["hooks"] == "active"

    # The home page's button: a person created in Capsule.
    made = requests.post(
        f"{local_deployment.capsule_url}/_emulator/changes",
        data={"subdomain": "exampleco"},
        allow_redirects=False,
        timeout=10,
    )
    assert made.status_code == 303

    changes = _record_changes(local_deployment, connection_id)
    assert changes, "no Capsule Record Changed event arrived"
    detail = changes[0]["detail"]
    assert detail["connection_id"] == connection_id
    assert detail["event"] == "party/created"
    assert detail["site"]["subdomain"] == "exampleco"
    assert detail["record"]["lastName"] == "By Hand"
    landing = requests.get(f"{local_deployment.url}/", timeout=10).text
    assert "Capsule Record Changed" in landing
