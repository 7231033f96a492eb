"""Status events: every transition, in order, from the table's stream through EventsFunction
to the bus and an app's queue (moto); nothing for a routine refresh; never a token."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import time_machine
from botocore.client import BaseClient

from capsule_oauth import TokenUnavailable, disconnect, get_access_token, tokens
from capsule_oauth.config import Settings
from local import lambda_container
from local.stack import Template, load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule, Reply
from tests.support.connections import CID, T0, run_refresh, seed, stored
from tests.support.status_events import StatusEvents

DUE = T0 + EXPIRES_IN - 3600
UNAVAILABLE: Reply = (503, {}, "{}")


def test_every_transition_is_published_once_in_order_and_a_routine_refresh_is_not(
    settings: Settings, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    grants = [seed(settings, fake_capsule)]
    assert status_events.kinds() == [("Connection Created", CID, 1)]

    with time_machine.travel(DUE, tick=False):
        assert run_refresh(settings).outcomes == {"refreshed": 1}
    assert status_events.kinds() == []  # routine: nothing

    due = stored(settings).refresh_due_at or 0
    fake_capsule.token_faults.extend([UNAVAILABLE] * 3)
    for _ in range(3):  # failures 1 and 2 say nothing; the third crosses the threshold
        with time_machine.travel(due, tick=False):
            assert run_refresh(settings).failures == {"Unavailable": 1}
        due = stored(settings).refresh_due_at or 0
    with time_machine.travel(due, tick=False):
        assert run_refresh(settings).outcomes == {"refreshed": 1}
    fake_capsule.revoke_all()  # the person removed the app in Capsule
    due = stored(settings).refresh_due_at or 0
    with time_machine.travel(due, tick=False):
        assert run_refresh(settings).outcomes == {"reauth_required": 1}
    grants.append(seed(settings, fake_capsule, now=due + 60))  # connected again
    with time_machine.travel(due + 120, tick=False):
        disconnect(CID)

    published = status_events.published()

    assert [(e["detail-type"], e["detail"]["previous_status"]) for e in published] == [
        ("Connection Refresh Failing", "active"),
        ("Connection Refresh Recovered", "active"),
        ("Connection Needs Reauth", "active"),
        ("Connection Reconnected", "needs_reauth"),
        ("Connection Disconnected", "active"),
    ]
    versions = [e["detail"]["version"] for e in published]
    assert versions == sorted(set(versions))
    assert versions[0] > 1
    assert [e["detail"]["reason"] for e in published] == [
        "Unavailable",
        "refreshed",
        "InvalidGrant",
        "connected",
        "revoked",
    ]
    failing = published[0]
    assert failing["source"] == "capsule-connector"
    assert failing["detail"] | {"version": 0, "occurred_at": ""} == {
        "connection_id": CID,
        "owner": "anonymous",
        "status": "active",
        "previous_status": "active",
        "site": {"subdomain": "exampleco", "name": "Example Co."},
        "user": {"id": "1", "name": "Scott Spacey"},
        "reason": "Unavailable",
        "version": 0,
        "occurred_at": "",
    }
    assert failing["detail"]["occurred_at"].endswith("Z")
    text = json.dumps(published)
    for grant in grants:
        assert grant["access_token"] not in text
        assert grant["refresh_token"] not in text


def test_failures_past_the_threshold_say_nothing_more(
    settings: Settings, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    seed(settings, fake_capsule)
    status_events.published()
    fake_capsule.token_faults.extend([UNAVAILABLE] * 5)
    due = DUE
    for _ in range(5):
        with time_machine.travel(due, tick=False):
            run_refresh(settings)
        due = stored(settings).refresh_due_at or 0

    assert [kind for kind, _, _ in status_events.kinds()] == ["Connection Refresh Failing"]


def test_waiting_out_capsules_rate_limit_publishes_nothing(
    settings: Settings, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    seed(settings, fake_capsule)
    status_events.published()
    expired = T0 + EXPIRES_IN + 10
    for window in range(4):  # four 429s, each after the last one's reset: past the threshold
        now = expired + 60 * window
        fake_capsule.token_faults.append(
            (429, {"X-RateLimit-Reset": str(now + 45)}, '{"error": "rate limit reached"}')
        )
        for second in (0, 5):  # a second caller in the window asks the record, not Capsule
            tokens.clear_cache()
            with time_machine.travel(now + second, tick=False), pytest.raises(TokenUnavailable):
                get_access_token(CID)

    assert len(fake_capsule.token_requests) == 4
    assert status_events.kinds() == []
    assert stored(settings).failure_count == 0


def _record(
    template: Template, sequence: str, connection_id: str, old: int | None, new_status: str
) -> dict[str, Any]:
    def image(version: int, status: str) -> dict[str, Any]:
        return {
            "connection_id": {"S": connection_id},
            "status": {"S": status},
            "version": {"N": str(version)},
            "connected_at": {"N": str(T0)},
            "updated_at": {"N": str(T0 + version)},
            "tokens": {"B": "c2VhbGVk"},
        }

    change: dict[str, Any] = {
        "SequenceNumber": sequence,
        "NewImage": image((old or 0) + 1, new_status),
    }
    if old is not None:
        change["OldImage"] = image(old, "active")
    return {
        "eventID": sequence,
        "eventName": "MODIFY" if old else "INSERT",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
        "dynamodb": change,
    }


def test_a_failed_put_events_entry_fails_only_its_record_and_its_connections_later_ones(
    template: Template,
    settings: Settings,
    status_events: StatusEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [
        _record(template, "101", "site:a", None, "active"),  # Created a
        _record(template, "102", "site:b", None, "active"),  # Created b: its entry fails
        _record(template, "103", "site:c", 1, "active"),  # no transition
        _record(template, "104", "site:b", 1, "needs_reauth"),  # b again: held back
        _record(template, "105", "site:c", 1, "needs_reauth"),  # c: published
    ]
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def put_events(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation != "PutEvents":
            return original(self, operation, params)
        entries = params["Entries"]
        refused = [json.loads(e["Detail"])["connection_id"] == "site:b" for e in entries]
        kept = [entry for entry, no in zip(entries, refused, strict=True) if not no]
        put = iter(
            original(self, operation, {**params, "Entries": kept})["Entries"] if kept else []
        )
        results = [{"ErrorCode": "InternalFailure"} if no else next(put) for no in refused]
        return {"FailedEntryCount": sum(refused), "Entries": results}

    monkeypatch.setattr(BaseClient, "_make_api_call", put_events)

    result = lambda_container.invoke(template, "EventsFunction", {"Records": records})

    assert result == {"batchItemFailures": [{"itemIdentifier": "102"}, {"itemIdentifier": "104"}]}
    published = status_events.bus.drain()
    assert [(e["detail-type"], e["detail"]["connection_id"]) for e in published] == [
        ("Connection Created", "site:a"),
        ("Connection Needs Reauth", "site:c"),
    ]


def test_a_batch_whose_every_event_fails_is_an_error_so_lambda_retries_and_bisects(
    template: Template,
    settings: Settings,
    status_events: StatusEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def unavailable(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutEvents":
            raise ConnectionError("EventBridge unreachable")
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", unavailable)
    records = [_record(template, "201", "site:a", None, "active")]

    with pytest.raises(Exception, match="All records failed"):
        lambda_container.invoke(template, "EventsFunction", {"Records": records})


def test_what_keeps_failing_goes_to_the_on_failure_queue(
    settings: Settings,
    fake_capsule: FakeCapsule,
    status_events: StatusEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status_events.pump.maximum_retry_attempts = 1
    original = BaseClient._make_api_call  # type: ignore[attr-defined]
    down = [True]

    def flaky(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutEvents" and down[0]:
            raise ConnectionError("EventBridge unreachable")
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", flaky)
    seed(settings, fake_capsule)

    assert status_events.published() == []  # first try
    assert status_events.published() == []  # the one retry, then the on-failure queue
    down[0] = False

    sqs = boto3.client("sqs")
    queue = status_events.pump.on_failure_queue_url
    assert queue is not None
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    info = json.loads(messages[0]["Body"])["DDBStreamBatchInfo"]
    assert info["batchSize"] >= 1
    assert info["streamArn"] == status_events.pump.stream_arn


def test_the_sample_stream_event_publishes_a_created_event(
    template: Template, settings: Settings, status_events: StatusEvents
) -> None:
    result = lambda_container.invoke(
        template, "EventsFunction", load_event("connection-stream.json")
    )

    assert result == {"batchItemFailures": []}
    (event,) = status_events.bus.drain()
    assert event["detail-type"] == "Connection Created"
    assert event["detail"]["owner"] == "user-42"
    assert "c2VhbGVk" not in json.dumps(event)  # the sealed tokens stay out


def _malformed(record: dict[str, Any], attribute: str, value: dict[str, str]) -> dict[str, Any]:
    record["dynamodb"]["NewImage"][attribute] = value
    return record


def test_a_record_that_cannot_be_understood_fails_alone_and_the_others_publish_in_order(
    template: Template, settings: Settings, status_events: StatusEvents
) -> None:
    records = [
        _record(template, "301", "site:a", None, "active"),  # Created a
        _malformed(_record(template, "302", "site:b", None, "active"), "version", {"S": "1"}),
        _record(template, "303", "site:c", None, "active"),  # Created c
        _malformed(_record(template, "304", "site:a", 1, "active"), "status", {"N": "2"}),
        _record(template, "305", "site:a", 1, "needs_reauth"),  # a again: still published
        _record(template, "306", "site:c", 1, "disconnected"),  # Disconnected c
    ]

    result = lambda_container.invoke(template, "EventsFunction", {"Records": records})

    assert result == {"batchItemFailures": [{"itemIdentifier": "302"}, {"itemIdentifier": "304"}]}
    published = status_events.bus.drain()
    assert [(e["detail-type"], e["detail"]["connection_id"]) for e in published] == [
        ("Connection Created", "site:a"),
        ("Connection Created", "site:c"),
        ("Connection Needs Reauth", "site:a"),
        ("Connection Disconnected", "site:c"),
    ]


def test_an_item_that_cannot_be_understood_lands_in_the_failure_queue_and_others_publish(
    settings: Settings, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    status_events.pump.maximum_retry_attempts = 1
    boto3.client("dynamodb").put_item(  # written by hand, not by the connector
        TableName=settings.connections_table,
        Item={"connection_id": {"S": "site:hand"}, "status": {"N": "1"}, "version": {"S": "1"}},
    )
    seed(settings, fake_capsule)

    assert status_events.kinds() == [("Connection Created", CID, 1)]  # first try
    assert status_events.kinds() == [("Connection Created", CID, 1)]  # retried from the bad one

    sqs = boto3.client("sqs")
    queue = status_events.pump.on_failure_queue_url
    assert queue is not None
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"])["DDBStreamBatchInfo"]["batchSize"] >= 2
    assert status_events.kinds() == []  # the shard moved on
