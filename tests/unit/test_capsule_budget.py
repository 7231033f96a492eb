"""One budget of Capsule calls per Capsule user: never past CapsuleHourlyBudget nor
Capsule's own Remaining, nothing after a 429 before its reset, refused calls never sent,
correct with several containers at once, and cheap in DynamoDB writes.

Capsule (the fake) keeps the real time here, so these tests do too; a test that needs the
reset to pass moves the connector's clock forward with time-machine.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
import time_machine

from capsule_oauth.capsule import budget
from capsule_oauth.capsule.budget import Budget
from capsule_oauth.client import CapsuleClient
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleRateLimited
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import seed, seed_owned

SITE, USER = "exampleco", "1"


def connected(settings: Settings, fake: FakeCapsule) -> str:
    now = int(time.time())
    seed(settings, fake, expires_at=now + EXPIRES_IN, now=now)
    return "exampleco:1"


def spend_until_refused(spender: Budget, limit: int = 10_000) -> int:
    spent = 0
    while spent < limit:
        try:
            spender.spend(SITE, USER, "client")
        except CapsuleRateLimited:
            return spent
        spent += 1
    return spent


def test_a_call_past_the_budget_is_refused_without_calling_capsule(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    small = replace(settings, capsule_hourly_budget=5)
    client = CapsuleClient(connected(settings, fake_capsule), settings=small)
    for _ in range(5):
        client.get("/parties")

    with pytest.raises(CapsuleRateLimited) as refused:
        client.get("/parties")

    assert len(fake_capsule.api_requests) == 5
    next_hour = (int(time.time()) // 3600 + 1) * 3600
    assert refused.value.reset_at == next_hour
    assert client.rate_limit is not None  # still Capsule's last headers


def test_several_containers_at_full_speed_never_pass_the_budget(
    settings: Settings, atomic_moto: None
) -> None:
    small = replace(settings, capsule_hourly_budget=57)
    containers = [Budget(small) for _ in range(8)]
    spent = [0] * len(containers)

    def run(index: int) -> None:
        spent[index] = spend_until_refused(containers[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(containers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(spent) <= 57
    assert sum(spent) >= 57 - 8 * 3  # only a little left idle in others' blocks


def test_capsules_remaining_is_respected_when_it_is_stricter(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    fake_capsule.store.update_settings({"rate_limit": 30})  # the user's other apps spent most
    client = CapsuleClient(connected(settings, fake_capsule), settings=settings)

    refused = 0
    for _ in range(100):
        try:
            client.get("/parties")
        except CapsuleRateLimited:
            refused += 1

    sent = len(fake_capsule.api_requests)
    assert 0 < sent <= 30  # Capsule never had to answer 429
    assert refused == 100 - sent
    assert client.rate_limit is not None
    assert client.rate_limit.remaining is not None


def test_remaining_from_one_container_holds_back_the_others(
    settings: Settings, atomic_moto: None
) -> None:
    first, second = Budget(settings), Budget(settings)
    first.spend(SITE, USER, "client")
    reset = time.time() + 1800

    first.observe(SITE, USER, status=200, limit=4000, remaining=410, reset_at=reset)

    # 410 left, 400 kept back for the user's other apps: at most 10 more, whoever sends them
    assert spend_until_refused(first) + spend_until_refused(second) <= 10


def test_nothing_goes_out_after_a_429_before_capsules_reset(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    cid = connected(settings, fake_capsule)
    reset = int(time.time()) + 600
    fake_capsule.api_faults.append(
        (429, {"X-RateLimit-Reset": str(reset)}, '{"error": "rate limit reached"}')
    )
    with pytest.raises(CapsuleRateLimited) as limited:
        CapsuleClient(cid, settings=settings).get("/parties")
    assert limited.value.reset_at == reset

    budget.reset()  # another container
    with pytest.raises(CapsuleRateLimited) as refused:
        CapsuleClient(cid, settings=settings).get("/parties")

    assert refused.value.reset_at == reset
    assert len(fake_capsule.api_requests) == 1
    with time_machine.travel(reset + 1, tick=False):
        budget.reset()
        assert CapsuleClient(cid, settings=settings).get("/parties") is not None
    assert len(fake_capsule.api_requests) == 2


def test_a_container_holding_a_block_stops_soon_after_another_sees_a_429(
    settings: Settings,
) -> None:
    holder, other = Budget(settings), Budget(settings)
    start = time.time()
    holder.spend(SITE, USER, "proxy")  # holds the rest of a block

    other.observe(SITE, USER, status=429, reset_at=start + 900)

    later = time.time() + budget.REREAD_SECONDS + 0.5
    with time_machine.travel(later, tick=False), pytest.raises(CapsuleRateLimited):
        holder.spend(SITE, USER, "proxy")


def test_two_owners_of_one_capsule_user_share_one_budget(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    small = replace(settings, capsule_hourly_budget=4)
    now = int(time.time())
    mine, _ = seed_owned(settings, fake_capsule, "user-42", now=now)
    theirs, _ = seed_owned(settings, fake_capsule, "user-7", now=now)
    assert mine != theirs
    CapsuleClient(mine, settings=small).get("/parties")
    CapsuleClient(mine, settings=small).get("/parties")
    budget.reset()  # another container, another owner
    CapsuleClient(theirs, settings=small).get("/parties")
    CapsuleClient(theirs, settings=small).get("/parties")

    with pytest.raises(CapsuleRateLimited):
        CapsuleClient(theirs, settings=small).get("/parties")
    assert len(fake_capsule.api_requests) == 4


def test_steady_state_costs_at_most_one_write_per_ten_calls(settings: Settings) -> None:
    container = Budget(settings)
    start = time.time()
    calls = 1000
    for i in range(calls):
        with time_machine.travel(start + i * 0.05, tick=False):  # 20 calls a second
            container.spend(SITE, USER, "proxy")
            container.observe(
                SITE, USER, status=200, limit=4000, remaining=3999 - i, reset_at=start + 3000
            )

    assert container.writes <= calls / 10


def test_a_new_hour_brings_a_new_budget(settings: Settings) -> None:
    small = replace(settings, capsule_hourly_budget=3)
    container = Budget(small)
    hour = (int(time.time()) // 3600 + 1) * 3600
    with time_machine.travel(hour + 10, tick=False):
        assert spend_until_refused(container) == 3
    with time_machine.travel(hour + 3610, tick=False):
        assert spend_until_refused(container) == 3


def test_calls_and_refusals_are_counted_by_source_never_by_connection(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    container = Budget(replace(settings, capsule_hourly_budget=1))
    container.spend(SITE, USER, "proxy")
    with pytest.raises(CapsuleRateLimited):
        container.spend(SITE, USER, "client")

    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    by_source = {(m["source"], name) for m in metrics for name in m if name.startswith("Capsule")}
    assert by_source == {("proxy", "CapsuleRequests"), ("client", "CapsuleRateLimited")}
    dimensions = {
        d for m in metrics for ds in m["_aws"]["CloudWatchMetrics"] for d in ds["Dimensions"][0]
    }
    assert dimensions == {"source", "service"}


def test_an_answer_arriving_late_does_not_loosen_the_cap(
    settings: Settings, atomic_moto: None
) -> None:
    first, second = Budget(settings), Budget(settings)
    first.spend(SITE, USER, "client")
    late = second.spend(SITE, USER, "client")  # sent first, answered last
    reset = time.time() + 1800

    first.observe(SITE, USER, status=200, limit=4000, remaining=410, reset_at=reset)
    second.observe(SITE, USER, status=200, limit=4000, remaining=500, reset_at=reset, ticket=late)

    assert spend_until_refused(first) + spend_until_refused(second) <= 10
