"""events/: every event is exercised by a test and matches what template.yaml routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.gateway import match_route
from local.stack import EVENTS, Template, load_event

TESTS = Path(__file__).resolve().parent.parent


def _test_sources() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for path in TESTS.rglob("test_*.py")
        if path.resolve() != Path(__file__).resolve()
    )


@pytest.mark.parametrize("event", sorted(p.name for p in EVENTS.glob("*.json")))
def test_every_event_is_used_by_a_test(event: str) -> None:
    assert f'"{event}"' in _test_sources()


@pytest.mark.parametrize("event", sorted(p.name for p in EVENTS.glob("*.json")))
def test_every_http_event_names_a_route_of_the_template(template: Template, event: str) -> None:
    body = load_event(event)
    if "Records" in body:  # the ConnectionsTable stream, as EventsFunction receives it
        assert {record["eventSource"] for record in body["Records"]} == {"aws:dynamodb"}
        return
    if body.get("version") != "2.0":
        assert body["detail-type"] == "Scheduled Event"
        return
    method = body["requestContext"]["http"]["method"]
    route, parameters = match_route(template.routes(), method, body["rawPath"])
    assert route is not None
    assert f"{route.method} {route.path}" == body["routeKey"] == body["requestContext"]["routeKey"]
    assert parameters == body.get("pathParameters", {})
