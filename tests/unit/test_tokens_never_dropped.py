"""What Capsule issued is never dropped, and nobody is asked to reconnect for nothing."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import time_machine
from botocore.exceptions import ClientError

from capsule_oauth import get_access_token, tokens
from capsule_oauth.capsule import api
from capsule_oauth.config import Settings
from capsule_oauth.errors import ReauthorizationRequired
from capsule_oauth.flows import refresh as refresh_flow
from capsule_oauth.store.connections import ConnectionStore
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import CID, T0, refresh_requests, run_refresh, seed, stored

DUE = T0 + EXPIRES_IN - 3600


def test_a_lease_held_elsewhere_is_not_a_refresh_failure() -> None:
    report = refresh_flow.RunReport()

    report.add(refresh_flow.RefreshResult(CID, refresh_flow.Outcome.CONTENDED, "LeaseHeld"))

    assert report.failures == {}


def test_tokens_rotated_while_our_lease_lapsed_are_still_saved(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    store = ConnectionStore(settings)
    # Worker A takes the lease; Capsule answers slowly, A's lease lapses, B takes it over.
    mine = store.acquire_lease(CID, owner="A", now=DUE)
    assert mine is not None
    store.acquire_lease(CID, owner="B", now=DUE + settings.lease_seconds + 1)
    new = store.tokens(mine)  # stands in for what Capsule rotated to

    saved = store.store_refreshed(
        mine, new, owner="A", expires_at=DUE + EXPIRES_IN, scope="read write",
        refresh_due_at=DUE + EXPIRES_IN - 86_400, now=DUE + 70,
    )  # fmt: skip

    assert saved.version == mine.version + 1  # nothing newer was saved meanwhile: A's count


def test_rotated_tokens_are_saved_over_a_failure_noted_meanwhile_with_a_new_version(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    store = ConnectionStore(settings)
    mine = store.acquire_lease(CID, owner="A", now=DUE)
    assert mine is not None
    # A's lease lapses; B takes over, fails, and notes the failure that makes the connection
    # "refresh failing": a new version (a status event), but the same tokens.
    theirs = store.acquire_lease(CID, owner="B", now=DUE + settings.lease_seconds + 1)
    assert theirs is not None
    store.record_failure(
        theirs, owner="B", error="Unavailable", retry_at=DUE + 900, now=DUE + 62, new_version=True
    )
    new = store.tokens(mine)

    saved = store.store_refreshed(
        mine, new, owner="A", expires_at=DUE + EXPIRES_IN, scope="read write",
        refresh_due_at=DUE + EXPIRES_IN - 86_400, now=DUE + 70,
    )  # fmt: skip

    assert (saved.version, saved.failure_count) == (mine.version + 2, 0)


@pytest.mark.usefixtures("atomic_moto")
def test_a_slow_refresh_past_its_lease_keeps_the_rotated_tokens_and_the_connection(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race, with a 4 s lease: A's refresh rotates at Capsule, but the answer
    # reaches A only after its lease lapsed and B took over with the old refresh token.
    seed(settings, fake_capsule)
    short = replace(settings, lease_seconds=4)
    skew = [0.0]  # how far both clocks moved on: no test waits out a lease for real
    monkeypatch.setattr(api, "now", lambda: time.monotonic() + skew[0])
    rotated, b_done = threading.Event(), threading.Event()

    def slow_answer_to_a(_form: dict[str, str]) -> None:
        if not rotated.is_set():
            rotated.set()
            b_done.wait(10)

    fake_capsule.after_token = slow_answer_to_a
    results: dict[str, refresh_flow.RefreshResult] = {}

    def worker_a() -> None:
        results["A"] = refresh_flow.refresh_connection(short, CID, owner="A")

    with time_machine.travel(DUE, tick=True) as clock:
        a = threading.Thread(target=worker_a)
        a.start()
        assert rotated.wait(10), results
        clock.shift(short.lease_seconds + 1)
        skew[0] += short.lease_seconds + 1
        results["B"] = refresh_flow.refresh_connection(short, CID, owner="B")
        b_done.set()
        a.join(10)

    assert results["B"].error == "InvalidGrantAfterTakeover"  # not needs_reauth
    assert results["A"].outcome is refresh_flow.Outcome.REFRESHED
    assert stored(settings).status == "active"
    assert store_tokens_are_live(settings, fake_capsule)


def test_invalid_grant_right_after_taking_over_a_lapsed_lease_is_retried_not_reauth(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    ConnectionStore(settings).acquire_lease(CID, owner="slow-worker", now=DUE - 120)
    fake_capsule.token_faults.append((400, {}, '{"error": "invalid_grant"}'))

    with time_machine.travel(DUE, tick=False):
        result = refresh_flow.refresh_connection(settings, CID, owner="B")

    assert result.outcome is refresh_flow.Outcome.FAILED
    assert result.error == "InvalidGrantAfterTakeover"
    after = stored(settings)
    assert after.status == "active"
    assert after.refresh_due_at == DUE + settings.lease_seconds  # asked again after a lease


def test_a_kms_or_dynamodb_fault_after_the_rotation_is_retried_and_the_tokens_kept(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(settings, fake_capsule)
    save = ConnectionStore.store_refreshed
    faults = iter([ClientError({"Error": {"Code": "ThrottlingException"}}, "Encrypt")])

    def flaky(self: ConnectionStore, *args: Any, **kwargs: Any) -> Any:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return save(self, *args, **kwargs)

    monkeypatch.setattr(ConnectionStore, "store_refreshed", flaky)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)

    with time_machine.travel(DUE, tick=False):
        report = run_refresh(settings)

    assert report.outcomes == {"refreshed": 1}
    assert store_tokens_are_live(settings, fake_capsule)


def test_a_save_that_keeps_failing_after_the_rotation_records_a_backoff(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(settings, fake_capsule)

    def broken(self: ConnectionStore, *args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "KMSInternalException"}}, "Encrypt")

    monkeypatch.setattr(ConnectionStore, "store_refreshed", broken)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)

    with time_machine.travel(DUE, tick=False):
        report = run_refresh(settings)

    assert report.outcomes == {"failed": 1}  # a failure with a backoff, not a crash
    after = stored(settings)
    assert after.failure_count == 1
    assert after.last_error == "RotatedTokensUnsaved"
    assert after.refresh_due_at == DUE + refresh_flow.backoff_seconds(1)
    assert after.lease_owner is None


def store_tokens_are_live(settings: Settings, fake: FakeCapsule) -> bool:
    store = ConnectionStore(settings)
    return store.tokens(stored(settings)).refresh_token in fake.refresh_tokens


def test_short_lived_tokens_are_not_refreshed_on_every_call(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    # A server issuing 120 s tokens, and a TokenMarginSeconds of 300.
    seed(settings, fake_capsule, expires_at=T0 + 120, now=T0)

    with time_machine.travel(T0 + 5, tick=False):
        for _ in range(3):
            get_access_token(CID, settings=settings)

    assert refresh_requests(fake_capsule) == []


def test_the_warm_cache_reads_the_connection_again_after_token_cache_seconds(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    with time_machine.travel(T0 + 10, tick=False):
        get_access_token(CID, settings=settings)
    # Another container disconnects it.
    current = ConnectionStore(settings).acquire_lease(CID, owner="other", now=T0 + 20)
    assert current is not None
    ConnectionStore(settings).mark_disconnected(
        current, owner="other", now=T0 + 20, reason="revoked"
    )

    later = T0 + 10 + settings.token_cache_seconds + 1
    with time_machine.travel(later, tick=False), pytest.raises(ReauthorizationRequired):
        get_access_token(CID, settings=settings)
    tokens.clear_cache()


def test_the_run_takes_a_worker_before_it_checks_the_time_left(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    for n in range(3):
        seed(settings, fake_capsule, connection_id=f"site{n}:1")
    fake_capsule.before_token = lambda _form: time.sleep(1.5)  # each refresh takes 1.5 s
    started = time.monotonic()
    one_worker = replace(settings, refresh_concurrency=1, refresh_min_remaining_ms=5_000)

    def remaining_ms() -> int:  # 6 s at the start of the run
        return int(6_000 - (time.monotonic() - started) * 1000)

    with time_machine.travel(DUE, tick=True):
        report = refresh_flow.refresh_due(one_worker, remaining_ms=remaining_ms)

    # The second connection could only start after 1.5 s, with 4.5 s left: under the 5 s floor.
    assert report.outcomes == {"refreshed": 1}
    assert report.stopped_early is True
