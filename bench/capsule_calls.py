"""Section: calling Capsule through the connector (the proxy route and the per-user budget).

- The proxy's own time per warm call: the handler's time less the time its request to
  Capsule took (the emulator over HTTP on this machine).
- The budget's DynamoDB writes per Capsule call, warm, in steady state (target ≤ 0.1).
- A fleet: 8 workers, each its own container (its own budget object and blocks), calling for
  one Capsule user at full speed against an emulator that allows 200 calls per hour.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import requests

from bench.common import SKIP, Row, median, verdict
from bench.harness import bench_stack
from bench.instrument import Recorder, aws_names, installed
from capsule_oauth.capsule import api, budget
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleRateLimited
from capsule_oauth.store import connections, crypto
from local.capsule_emulator import DEFAULT_ACCOUNTS, Account
from local.lambda_container import LambdaFunction, reset_caches
from local.stack import load_event

SECTION = "calling Capsule"
WARM_UP_CALLS = 30
PROXY_CALLS = 300
WRITES_PER_CALL_TARGET = 0.1
FLEET_WORKERS = 8
FLEET_ATTEMPTS = 40  # per worker: 320 attempts for a budget of 180
FLEET_CAPSULE_LIMIT = 200
FLEET_BUDGET = 180  # CapsuleHourlyBudget: 20 of Capsule's 200 left to the user's other apps


def _connect(settings: Settings, emulator_store: Any, account: Account) -> str:
    """A connection of ``account``, as the callback leaves one."""
    grant = emulator_store.issue_tokens_for(account.subdomain, account.user_id, "read write")
    identity = connections.Identity(
        account.subdomain, account.site_name, f"https://{account.subdomain}.capsulecrm.com",
        str(account.user_id), account.user_name, account.username, owner="bench",
    )  # fmt: skip
    now = int(time.time())
    connections.ConnectionStore(settings).save_authorized(
        identity,
        crypto.TokenPair(grant["access_token"], grant["refresh_token"]),
        expires_at=now + int(grant["expires_in"]),
        scope="read write",
        refresh_due_at=now + int(grant["expires_in"]) - 86_400,
        now=now,
    )
    return identity.connection_id


@contextlib.contextmanager
def _capsule_time() -> Iterator[list[float]]:
    """Seconds each request to Capsule took (the handler's time less these is its own)."""
    spent: list[float] = []
    original = api.send

    def timed(*args: Any, **kwargs: Any) -> requests.Response:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    api.send = timed
    try:
        yield spent
    finally:
        api.send = original


def _proxy_rows(local: Any, recorder: Recorder, judged: bool) -> list[Row]:
    account = DEFAULT_ACCOUNTS[0]
    connection_id = _connect(local.settings, local.emulator.store, account)
    route = LambdaFunction.of(local.template, "CapsuleProxyFunction")
    event = load_event("capsule-proxy.json")
    event["rawPath"] = f"/connections/{connection_id}/capsule/parties"
    event["pathParameters"] = {"connection_id": connection_id, "path": "parties"}

    def call() -> None:
        status = route.invoke(event)["statusCode"]
        if status != 200:
            raise RuntimeError(f"the proxy answered {status}")

    reset_caches()
    for _ in range(WARM_UP_CALLS):
        call()
    own_us: list[float] = []
    with recorder.recording() as calls, _capsule_time() as capsule:
        for _ in range(PROXY_CALLS):
            before = len(capsule)
            began = time.perf_counter()
            call()
            total = time.perf_counter() - began
            own_us.append((total - sum(capsule[before:])) * 1e6)
    deciles = statistics.quantiles(own_us, n=10)
    writes = [name for name in aws_names(calls) if name == "dynamodb:UpdateItem"]
    per_call = len(writes) / PROXY_CALLS
    return [
        Row(
            SECTION,
            f"proxy GET /parties, warm: own time excluding Capsule's answer ({PROXY_CALLS} calls)",
            f"median {median(own_us):.0f} µs (p90 {deciles[-1]:.0f})",
            "" if judged else "not judged (--quick)",
            "" if judged else SKIP,
            value=round(median(own_us), 1),
            unit="µs",
            detail={"p90_us": round(deciles[-1], 1), "aws_calls": len(aws_names(calls))},
        ),
        Row(
            SECTION,
            "budget: DynamoDB writes per Capsule call, warm steady state",
            f"{per_call:.3f} ({len(writes)} writes for {PROXY_CALLS} calls;"
            f" {len(aws_names(calls))} AWS calls in all)",
            f"≤ {WRITES_PER_CALL_TARGET}",
            verdict(per_call <= WRITES_PER_CALL_TARGET),
            value=round(per_call, 4),
            unit="writes per call",
        ),
    ]


def _fleet_rows(local: Any) -> list[Row]:
    account = DEFAULT_ACCOUNTS[1]  # a user the rows above did not spend from
    connection_id = _connect(local.settings, local.emulator.store, account)
    local.emulator.store.update_settings({"rate_limit": FLEET_CAPSULE_LIMIT})
    settings = replace(local.settings, capsule_hourly_budget=FLEET_BUDGET)
    token = connections.ConnectionStore(settings).get(connection_id)
    assert token is not None
    access = connections.ConnectionStore(settings).tokens(token).access_token
    outcomes: dict[str, int] = {"answered": 0, "capsule_429": 0, "refused": 0, "other": 0}
    lock = threading.Lock()

    def worker() -> None:
        own = budget.Budget(settings)  # a container of its own
        draw = api.Draw(account.subdomain, str(account.user_id), "proxy", own)
        for _ in range(FLEET_ATTEMPTS):
            try:
                answer = api.api_call(
                    settings.capsule_base_url, access, "GET", "/parties", timeout=10, draw=draw
                )
                kind = {200: "answered", 429: "capsule_429"}.get(answer.status_code, "other")
            except CapsuleRateLimited:
                kind = "refused"
            with lock:
                outcomes[kind] += 1

    threads = [threading.Thread(target=worker) for _ in range(FLEET_WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reached = outcomes["answered"] + outcomes["capsule_429"] + outcomes["other"]
    share = reached / FLEET_BUDGET
    fleet = (
        f"{FLEET_WORKERS} workers, one Capsule user, emulator limit {FLEET_CAPSULE_LIMIT}/hour,"
        f" CapsuleHourlyBudget {FLEET_BUDGET}"
    )
    return [
        Row(
            SECTION,
            f"fleet ({fleet}): calls that reached the emulator",
            f"{reached} of {FLEET_WORKERS * FLEET_ATTEMPTS} attempts",
            f"≤ {FLEET_BUDGET}",
            verdict(reached <= FLEET_BUDGET),
            value=reached,
            unit="calls",
        ),
        Row(
            SECTION,
            "fleet: 429s from the emulator",
            str(outcomes["capsule_429"]),
            "0",
            verdict(outcomes["capsule_429"] == 0),
            value=outcomes["capsule_429"],
            unit="answers",
        ),
        Row(
            SECTION,
            "fleet: calls refused locally (never sent)",
            str(outcomes["refused"]),
            value=outcomes["refused"],
            unit="calls",
        ),
        Row(
            SECTION,
            "fleet: share of the budget used",
            f"{share:.0%} ({reached} of {FLEET_BUDGET})",
            value=round(share, 3),
            unit="share",
        ),
    ]


def run(judged: bool = True) -> list[Row]:
    recorder = Recorder()
    with bench_stack() as local:
        recorder.capsule_base_url = local.emulator.url
        with installed(recorder):
            rows = _proxy_rows(local, recorder, judged)
        rows += _fleet_rows(local)
    return rows
