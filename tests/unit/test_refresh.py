"""Keeping connections alive: scheduled refresh, leases, fencing and failure classes."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
import time_machine
from aws_lambda_powertools.metrics import MetricUnit

from capsule_oauth import get_access_token
from capsule_oauth.config import Settings
from capsule_oauth.observability import metrics
from capsule_oauth.store import aws, connections, crypto
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule, Reply
from tests.support.connections import (
    CID,
    T0,
    refresh_requests,
    run_refresh,
    seed,
    stored,
    stored_tokens,
)

DUE = T0 + EXPIRES_IN - 3600  # inside the 24 h lead, an hour before expiry


@pytest.fixture
def at_due_time() -> Iterator[None]:
    with time_machine.travel(DUE, tick=False):
        yield


# --- the scheduled refresh -------------------------------------------------------------


def test_due_connection_gets_new_tokens_and_a_new_due_time(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    first = seed(settings, fake_capsule)

    with time_machine.travel(DUE, tick=False):
        report = run_refresh(settings)

    assert report.outcomes == {"refreshed": 1}
    connection = stored(settings)
    tokens = stored_tokens(settings)
    assert tokens.refresh_token != first["refresh_token"]
    assert tokens.refresh_token in fake_capsule.refresh_tokens
    assert connection.version == 2
    assert connection.expires_at == DUE + EXPIRES_IN
    assert connection.refresh_due_at == DUE + EXPIRES_IN - 86_400
    assert connection.last_refreshed_at == DUE
    assert connection.lease_owner is None


def test_connection_not_yet_due_is_not_touched(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    before = stored(settings)

    with time_machine.travel(DUE - 86_400, tick=False):
        report = run_refresh(settings)

    assert report.due == 0
    assert fake_capsule.token_requests == []
    assert stored(settings) == before


def test_rotation_twice_in_a_row_sends_the_newest_refresh_token(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    first = seed(settings, fake_capsule)
    with time_machine.travel(DUE, tick=False):
        run_refresh(settings)
    after_first = stored_tokens(settings)

    with time_machine.travel(DUE + EXPIRES_IN, tick=False):
        report = run_refresh(settings)

    assert report.outcomes == {"refreshed": 1}
    sent = [r["refresh_token"] for r in refresh_requests(fake_capsule)]
    assert sent == [first["refresh_token"], after_first.refresh_token]
    assert first["refresh_token"] not in fake_capsule.refresh_tokens  # the fake killed it
    assert stored_tokens(settings).refresh_token in fake_capsule.refresh_tokens


def test_answer_without_refresh_token_keeps_the_old_one(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    first = seed(settings, fake_capsule)
    fake_capsule.token_faults.append(
        (
            200,
            {"Content-Type": "application/json"},
            '{"access_token": "new-access", "expires_in": 3600}',
        )
    )

    run_refresh(settings)

    tokens = stored_tokens(settings)
    assert tokens.access_token == "new-access"
    assert tokens.refresh_token == first["refresh_token"]
    assert stored(settings).expires_at == DUE + 3600


def test_refresh_handler_runs_on_the_scheduled_event(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, at_due_time: None
) -> None:
    seed(settings, fake_capsule)

    report = invoke("RefreshFunction", load_event("scheduled.json"))

    assert report == {
        "due": 1,
        "outcomes": {"refreshed": 1},
        "failures": {},
        "skipped": {},
        "stopped_early": False,
        "pending_discarded": 0,
    }


def test_refresh_emits_success_and_due_metrics(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    seed(settings, fake_capsule)

    run_refresh(settings)

    emitted = metrics.metric_set
    assert emitted["DueConnections"]["Value"] == [1.0]
    assert emitted["RefreshSucceeded"]["Value"] == [1.0]
    assert emitted["RefreshSucceeded"]["Unit"] == MetricUnit.Count.value


# --- reads follow the number due, not the table size -----------------------------------


def test_a_run_over_1000_connections_with_10_due_reads_about_10_items(
    settings: Settings, fake_capsule: FakeCapsule, stack: Stack
) -> None:
    dynamodb = boto3.client("dynamodb")
    blob = b"not-due-never-decrypted"
    for start in range(0, 990, 25):
        dynamodb.batch_write_item(
            RequestItems={
                stack.connections_table: [
                    {
                        "PutRequest": {
                            "Item": {
                                "connection_id": {"S": f"idle:{n}"},
                                "status": {"S": "active"},
                                "version": {"N": "1"},
                                "tokens": {"B": blob},
                                "expires_at": {"N": str(T0 + EXPIRES_IN * 2)},
                                "refresh_queue": {"S": "active"},
                                "refresh_due_at": {"N": str(T0 + EXPIRES_IN)},
                            }
                        }
                    }
                    for n in range(start, min(start + 25, 990))
                ]
            }
        )
    for n in range(10):
        seed(settings, fake_capsule, connection_id=f"busy{n}:1")
    idle_before = dynamodb.get_item(
        TableName=stack.connections_table, Key={"connection_id": {"S": "idle:7"}}
    )
    read: dict[str, int] = {}

    def count_items(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        items = len(parsed.get("Items", [])) + (1 if "Item" in parsed else 0)
        read[model.name] = read.get(model.name, 0) + items

    client = aws.dynamodb()
    client.meta.events.register("after-call.dynamodb.*", count_items)
    with time_machine.travel(DUE, tick=False):
        report = run_refresh(settings)
    client.meta.events.unregister("after-call.dynamodb.*", count_items)

    assert report.outcomes == {"refreshed": 10}
    assert read.get("Query", 0) == 10
    assert "Scan" not in read
    assert read.get("GetItem", 0) == 0  # the lease write returns the item: no extra read
    idle_after = dynamodb.get_item(
        TableName=stack.connections_table, Key={"connection_id": {"S": "idle:7"}}
    )
    assert idle_after["Item"] == idle_before["Item"]


# --- failures ------------------------------------------------------------------------------


def _json(status: int, body: str, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, body


TRANSIENT: dict[str, tuple[Reply, str]] = {
    "timeout": (requests.ReadTimeout("slow"), "Timeout"),
    "connection error": (requests.ConnectionError("refused"), "Unavailable"),
    "5xx": (_json(502, '{"message": "bad gateway"}'), "Unavailable"),
    "malformed": (_json(200, "<html>oops"), "BadResponse"),
    "invalid_client": (_json(401, '{"error": "invalid_client"}'), "InvalidClient"),
}


@pytest.mark.parametrize("failure", list(TRANSIENT))
def test_transient_failure_keeps_tokens_and_records_the_error(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None, failure: str
) -> None:
    seed(settings, fake_capsule)
    before = stored(settings)
    reply, kind = TRANSIENT[failure]
    fake_capsule.token_faults.append(reply)

    report = run_refresh(settings)

    after = stored(settings)
    assert report.failures == {kind: 1}
    assert after.tokens == before.tokens
    assert after.version == before.version
    assert after.status == "active"
    assert after.failure_count == 1
    assert after.last_error == kind
    assert after.refresh_due_at == DUE + 900  # first backoff step
    assert after.lease_owner is None


def test_after_a_transient_failure_the_next_run_uses_the_same_refresh_token_and_succeeds(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    first = seed(settings, fake_capsule)
    fake_capsule.token_faults.append(_json(503, "{}"))
    with time_machine.travel(DUE, tick=False):
        run_refresh(settings)

    with time_machine.travel(DUE + 900, tick=False):
        report = run_refresh(settings)

    assert report.outcomes == {"refreshed": 1}
    assert [r["refresh_token"] for r in refresh_requests(fake_capsule)] == [
        first["refresh_token"],
        first["refresh_token"],
    ]
    after = stored(settings)
    assert (after.failure_count, after.last_error) == (0, None)


def test_repeated_failures_back_off_longer_each_time(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.token_faults.extend([_json(503, "{}"), _json(503, "{}")])
    with time_machine.travel(DUE, tick=False):
        run_refresh(settings)
    with time_machine.travel(DUE + 899, tick=False):
        early = run_refresh(settings)

    with time_machine.travel(DUE + 900, tick=False):
        run_refresh(settings)

    assert early.due == 0
    after = stored(settings)
    assert after.failure_count == 2
    assert after.refresh_due_at == DUE + 900 + 1800


def test_rate_limit_waits_until_capsule_says_it_resets(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.token_faults.append(
        _json(429, '{"error": "rate limit reached"}', **{"X-RateLimit-Reset": str(DUE + 7200)})
    )

    report = run_refresh(settings)

    assert report.failures == {"RateLimited": 1}
    assert stored(settings).refresh_due_at == DUE + 7200


def test_a_429_waits_for_capsules_reset_and_does_not_escalate_the_backoff(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.token_faults.extend([_json(503, "{}"), _json(503, "{}")])
    due = DUE
    for _ in range(2):  # two real failures: the next try is 30 minutes out
        with time_machine.travel(due, tick=False):
            run_refresh(settings)
        due = stored(settings).refresh_due_at or 0
    before = stored(settings)
    fake_capsule.token_faults.append(
        _json(429, '{"error": "rate limit reached"}', **{"X-RateLimit-Reset": str(due + 45)})
    )

    with time_machine.travel(due, tick=False):
        report = run_refresh(settings)

    assert report.failures == {"RateLimited": 1}
    after = stored(settings)
    assert (after.failure_count, after.version) == (before.failure_count, before.version)
    assert after.refresh_due_at == after.rate_limited_until == due + 45
    assert after.lease_owner is None
    with time_machine.travel(due + 45, tick=False):
        assert run_refresh(settings).outcomes == {"refreshed": 1}
    assert stored(settings).failure_count == 0


def test_a_429_that_does_not_say_when_it_resets_leaves_capsule_alone_for_a_minute(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.token_faults.append(_json(429, '{"error": "rate limit reached"}'))

    report = run_refresh(settings)

    assert report.failures == {"RateLimited": 1}
    after = stored(settings)
    assert (after.rate_limited_until, after.refresh_due_at) == (DUE + 60, DUE + 60)
    assert after.failure_count == 0


def test_invalid_grant_marks_needs_reauth_once_and_leaves_the_due_index(
    settings: Settings, fake_capsule: FakeCapsule, stack: Stack, at_due_time: None
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.revoke_all()  # the person removed the app in Capsule

    report = run_refresh(settings)
    again = run_refresh(settings)

    assert report.outcomes == {"reauth_required": 1}
    assert metrics.metric_set["ReauthRequired"]["Value"] == [1.0]
    assert again.due == 0
    assert len(fake_capsule.token_requests) == 1
    connection = stored(settings)
    assert connection.status == "needs_reauth"
    assert connection.last_error == "InvalidGrant"
    item = boto3.client("dynamodb").get_item(
        TableName=stack.connections_table, Key={"connection_id": {"S": CID}}
    )["Item"]
    assert "refresh_queue" not in item
    assert "tokens" in item  # nothing is deleted


def test_invalid_grant_after_another_workers_refresh_is_not_a_failure(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    seed(settings, fake_capsule)
    newer = crypto.seal(settings.token_key_id, CID, crypto.TokenPair("theirs-a", "theirs-r"))

    def another_worker_wins(form: dict[str, str]) -> None:
        # Our lease ran out while the request was in flight; another worker refreshed.
        boto3.client("dynamodb").update_item(
            TableName=settings.connections_table,
            Key={"connection_id": {"S": CID}},
            UpdateExpression="SET tokens = :t, version = version + :one",
            ExpressionAttributeValues={":t": {"B": newer}, ":one": {"N": "1"}},
        )
        fake_capsule.revoke_all()

    fake_capsule.before_token = another_worker_wins

    report = run_refresh(settings)

    assert report.outcomes == {"not_needed": 1}
    connection = stored(settings)
    assert connection.status == "active"
    assert stored_tokens(settings).refresh_token == "theirs-r"


def test_lease_held_by_another_worker_leaves_the_connection_alone(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    seed(settings, fake_capsule)
    connections.ConnectionStore(settings).acquire_lease(
        CID, owner="someone-else", now=DUE, lease_seconds=60
    )
    before = stored(settings)

    report = run_refresh(settings)

    assert report.outcomes == {"contended": 1}
    assert fake_capsule.token_requests == []
    assert stored(settings) == before


def test_an_expired_lease_is_taken_over(settings: Settings, fake_capsule: FakeCapsule) -> None:
    seed(settings, fake_capsule)
    connections.ConnectionStore(settings).acquire_lease(
        CID, owner="crashed-worker", now=DUE - 120, lease_seconds=60
    )

    with time_machine.travel(DUE, tick=False):
        report = run_refresh(settings)

    assert report.outcomes == {"refreshed": 1}


def test_refreshed_tokens_are_not_written_over_a_reconnect(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    seed(settings, fake_capsule)

    def person_reconnects(form: dict[str, str]) -> None:
        seed(settings, fake_capsule, now=DUE, expires_at=DUE + EXPIRES_IN)

    fake_capsule.before_token = person_reconnects

    report = run_refresh(settings)

    assert report.failures == {"StaleWrite": 1}
    assert stored(settings).version == 2  # the reconnect's write, not ours
    assert stored_tokens(settings).refresh_token in fake_capsule.refresh_tokens


# --- time budget -----------------------------------------------------------------------------


def test_a_run_short_of_time_stops_and_the_next_run_finishes(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None
) -> None:
    for n in range(5):
        seed(settings, fake_capsule, connection_id=f"site{n}:1")
    # Two connections' worth: each is asked once when taken on, once by its worker (its deadline).
    budget = iter([60_000] * 4)

    first = run_refresh(settings, remaining_ms=lambda: next(budget, 1_000))
    second = run_refresh(settings)

    assert first.stopped_early is True
    assert first.outcomes == {"refreshed": 2}
    assert second.outcomes == {"refreshed": 3}
    assert second.stopped_early is False


def test_a_refresh_with_too_little_time_left_is_skipped_counted_and_stays_due(
    settings: Settings, fake_capsule: FakeCapsule, at_due_time: None, log_output: io.StringIO
) -> None:
    seed(settings, fake_capsule)
    before = stored(settings)
    budget = iter([60_000, 11_000])  # enough to take it on; too little once its worker starts

    report = run_refresh(settings, remaining_ms=lambda: next(budget, 11_000))

    assert report.outcomes == {"skipped": 1}
    assert report.skipped == {"NoTimeLeft": 1}
    assert report.failures == {}
    assert metrics.metric_set["RefreshSkipped"]["Value"] == [1.0]
    assert refresh_requests(fake_capsule) == []
    after = stored(settings)
    assert (after.refresh_due_at, after.lease_owner) == (before.refresh_due_at, None)
    assert (after.failure_count, after.version) == (0, before.version)
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    skipped = [line for line in lines if line.get("message", "").startswith("Refresh skipped")]
    assert [(line["connection_id"], line["reason"]) for line in skipped] == [(CID, "NoTimeLeft")]
    assert run_refresh(settings).outcomes == {"refreshed": 1}  # the next run takes it


# --- many refreshers at once -----------------------------------------------------------------


def test_twelve_concurrent_refreshers_make_exactly_one_token_request(
    settings: Settings, fake_capsule: FakeCapsule, atomic_moto: None
) -> None:
    now = int(time.time())
    seed(settings, fake_capsule, expires_at=now + 60, now=now - EXPIRES_IN)
    barrier = threading.Barrier(12)
    tokens: list[str] = []
    errors: list[BaseException] = []

    def scheduled() -> None:
        barrier.wait()
        run_refresh(settings)

    def on_demand() -> None:
        barrier.wait()
        try:
            tokens.append(get_access_token(CID, settings=settings))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=scheduled if n % 2 else on_demand) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(refresh_requests(fake_capsule)) == 1
    newest = stored_tokens(settings)
    assert newest.refresh_token in fake_capsule.refresh_tokens
    assert tokens == [newest.access_token] * 6
