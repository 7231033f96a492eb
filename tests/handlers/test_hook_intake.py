"""POST /capsule-hooks/{hook_token}: every rule of the intake, on moto and the fake Capsule."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from botocore.client import BaseClient

from capsule_oauth import config
from capsule_oauth.store import aws
from local.lambda_container import Invoke
from local.stack import Stack, Template, load_event
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import CID, seed
from tests.support.hooks import Bus, deliver, delivery_event, hooks_on, subscribe, token_of


def _party(number: int, **extra: Any) -> dict[str, Any]:
    return {"id": number, "type": "person", "updatedAt": "2026-11-28T10:00:00Z", **extra}


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch, stack: Stack, fake_capsule: FakeCapsule) -> str:
    """A connection subscribed to party/created and party/updated: its hook token."""
    hooks_on(monkeypatch)
    seed(config.settings(), fake_capsule)
    subscribe()
    return token_of(fake_capsule)


@pytest.fixture
def bus(stack: Stack) -> Bus:
    return Bus.wire(stack)


@pytest.fixture
def put_events_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of entries of each PutEvents call."""
    calls: list[int] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def counting(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutEvents":
            calls.append(len(params["Entries"]))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return calls


def test_a_delivery_becomes_one_event_per_record_with_the_documented_detail(
    token: str, bus: Bus, invoke: Invoke
) -> None:
    record = _party(11587, firstName="Scott")

    assert deliver(invoke, token, {"event": "party/created", "payload": [record]}) == 200

    [event] = bus.changes()
    assert event["source"] == "capsule-connector"
    detail = event["detail"]
    assert set(detail) == {
        "connection_id", "owner", "site", "event", "record_type", "record_id", "record",
        "truncated", "delivery_id", "received_at",
    }  # fmt: skip
    assert detail["connection_id"] == CID
    assert detail["owner"] == "anonymous"
    assert detail["site"] == {"subdomain": "exampleco", "name": "Example Co."}
    assert (detail["event"], detail["record_type"], detail["record_id"]) == (
        "party/created",
        "party",
        "11587",
    )
    assert detail["record"] == record
    assert detail["truncated"] is False
    assert re.fullmatch(r"[0-9a-f]{64}", detail["delivery_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", detail["received_at"])


def test_25_records_go_out_in_3_put_events_calls(
    token: str, bus: Bus, invoke: Invoke, put_events_calls: list[int]
) -> None:
    payload = [_party(n) for n in range(25)]

    assert deliver(invoke, token, {"event": "party/updated", "payload": payload}) == 200

    assert put_events_calls == [10, 10, 5]
    assert sorted(e["detail"]["record_id"] for e in bus.changes()) == sorted(
        str(n) for n in range(25)
    )


def test_an_event_the_connection_did_not_subscribe_is_answered_200_and_not_published(
    token: str, bus: Bus, invoke: Invoke, put_events_calls: list[int]
) -> None:
    assert deliver(invoke, token, {"event": "task/completed", "payload": [_party(1)]}) == 200

    assert put_events_calls == []
    assert bus.changes() == []


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"payload": []}',
        '{"event": 7, "payload": []}',
        '{"event": "party/created"}',
        '{"event": "party/created", "payload": {"id": 1}}',
        '{"event": "party/created", "payload": [1, 2]}',
    ],
)
def test_a_malformed_body_is_400_and_nothing_is_published(
    token: str, invoke: Invoke, put_events_calls: list[int], raw: str
) -> None:
    assert deliver(invoke, token, None, raw=raw) == 400
    assert put_events_calls == []


def test_a_body_over_1_mib_is_400(token: str, invoke: Invoke, put_events_calls: list[int]) -> None:
    body = {"event": "party/created", "payload": [_party(1, about="x" * (1 << 20))]}

    assert deliver(invoke, token, body) == 400
    assert put_events_calls == []


def test_an_unknown_or_malformed_token_is_410(
    token: str, invoke: Invoke, put_events_calls: list[int]
) -> None:
    body = {"event": "party/created", "payload": [_party(1)]}

    assert deliver(invoke, "A" * 43, body) == 410
    assert deliver(invoke, "short", body) == 410
    assert deliver(invoke, token[:-1] + ("A" if token[-1] != "A" else "B"), body) == 410
    assert put_events_calls == []


def test_a_failing_entry_answers_500_and_the_retry_carries_the_same_delivery_ids(
    token: str, bus: Bus, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"event": "party/updated", "payload": [_party(n) for n in range(12)]}
    client = aws.events()
    original = client.put_events
    failures = iter([True])

    def one_entry_fails(**kwargs: Any) -> Any:
        answer = original(**kwargs)
        if next(failures, False):
            answer["FailedEntryCount"] = 1
        return answer

    monkeypatch.setattr(client, "put_events", one_entry_fails)

    assert deliver(invoke, token, body) == 500
    first = {e["detail"]["record_id"]: e["detail"]["delivery_id"] for e in bus.changes()}
    assert deliver(invoke, token, body) == 200  # Capsule delivers again
    again = {e["detail"]["record_id"]: e["detail"]["delivery_id"] for e in bus.changes()}

    assert len(again) == 12
    assert all(again[record_id] == delivery_id for record_id, delivery_id in first.items())


def test_the_same_change_has_the_same_delivery_id_and_a_new_change_another(
    token: str, bus: Bus, invoke: Invoke
) -> None:
    deliver(invoke, token, {"event": "party/updated", "payload": [_party(1)]})
    deliver(invoke, token, {"event": "party/updated", "payload": [_party(1)]})
    later = _party(1, updatedAt="2026-11-28T11:00:00Z")
    deliver(invoke, token, {"event": "party/updated", "payload": [later]})

    ids = [e["detail"]["delivery_id"] for e in bus.changes()]
    assert len(ids) == 3
    assert ids[0] == ids[1] != ids[2]


def test_a_record_too_large_for_an_event_goes_as_null_and_truncated(
    token: str, bus: Bus, invoke: Invoke
) -> None:
    big = _party(7, about="y" * 300_000)

    assert deliver(invoke, token, {"event": "party/updated", "payload": [big, _party(8)]}) == 200

    events = {e["detail"]["record_id"]: e["detail"] for e in bus.changes()}
    assert events["7"]["record"] is None
    assert events["7"]["truncated"] is True
    assert events["8"]["truncated"] is False


def test_a_base64_body_is_read(token: str, bus: Bus, invoke: Invoke) -> None:
    import base64

    event = delivery_event(token, {"event": "party/created", "payload": [_party(3)]})
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True

    assert invoke("HookIntakeFunction", event)["statusCode"] == 200
    assert len(bus.changes()) == 1


def test_the_hook_token_appears_in_no_log_line_metric_event_or_answer(
    token: str,
    bus: Bus,
    invoke: Invoke,
    log_output: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = [
        invoke("HookIntakeFunction", delivery_event(token, body, raw=raw))
        for body, raw in [
            ({"event": "party/created", "payload": [_party(1)]}, None),
            ({"event": "task/created", "payload": []}, None),
            (None, "not json"),
        ]
    ]
    answers.append(invoke("HookIntakeFunction", delivery_event("B" * 43, {})))

    seen = log_output.getvalue() + capsys.readouterr().out + json.dumps(answers)
    seen += json.dumps(bus.changes())
    assert "CapsuleHookDeliveries" in seen
    assert token not in seen
    assert "B" * 43 not in seen


def test_the_api_access_log_holds_the_route_key_and_no_path(template: Template) -> None:
    settings = template.resources["HttpApi"]["Properties"]["AccessLogSettings"]
    fields = re.findall(r"\$context\.[A-Za-z.]+", settings["Format"])

    assert "$context.routeKey" in fields
    assert not [f for f in fields if re.search(r"path|uri|url|requestOverride", f, re.I)]


def test_the_sample_event_as_written_has_an_unknown_token_and_gets_410(
    stack: Stack, invoke: Invoke
) -> None:
    answer = invoke("HookIntakeFunction", load_event("hook-delivery.json"))

    assert answer == {
        "statusCode": 410,
        "headers": {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        "body": "",
        "isBase64Encoded": False,
    }
