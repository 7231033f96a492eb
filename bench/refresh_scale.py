"""Section 4: the scheduled refresh over a large table with a few connections due.

``total`` connections live in moto's ConnectionsTable; ``due`` of them are due now and hold
real KMS-sealed tokens whose refresh tokens the emulator knows. The emulator answers every
token request after ``latency`` seconds. Each concurrency gets the same ``due`` connections,
re-seeded before its run.

moto runs in its own process (bench/moto_process.py), as ``make local`` runs it, so its
pure-Python request handling no longer shares the connector's GIL. Per refresh, three CPU
times are reported separately: the connector's (this process's CPU time, minus what the
emulator's request threads spent), the emulator's (its threads' own CPU time), and moto's
(its process's, from /proc; Linux only). The connector's share is what a Lambda pays.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.instrument import Recorder, installed
from bench.moto_process import ServerStack, server_stack
from capsule_oauth.config import Settings
from capsule_oauth.flows import refresh as refresh_flow
from capsule_oauth.store import aws, connections, crypto
from local.capsule_emulator import Account

SECTION = "refresh at scale"
_ACCOUNT = Account("benchco", "Bench Co.", 1, "bench", "Bench User")
_BATCH = 25
_SEED_WORKERS = 4  # overlap the HTTP round trips; moto applies one write at a time anyway
_IDLE_BLOB = bytes(range(256)) + bytes(64)  # about the size of a sealed pair; never decrypted


@dataclass
class RunResult:
    concurrency: int
    wall_s: float
    cpu_s: float  # this process: the connector and the emulator's request threads
    due: int
    outcomes: dict[str, int]
    items_read: int
    calls: int
    aws_calls: int
    capsule_calls: int
    moto_cpu_s: float | None = None  # moto's process (None: not measurable here)
    seconds_by_call: dict[str, float] = field(default_factory=dict)
    count_by_call: dict[str, int] = field(default_factory=dict)
    seconds_by_kind: dict[str, float] = field(default_factory=dict)
    cpu_seconds_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.due / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def emulator_cpu_s(self) -> float:
        return self.cpu_seconds_by_kind.get("emulator", 0.0)

    @property
    def connector_cpu_s(self) -> float:
        return max(self.cpu_s - self.emulator_cpu_s, 0.0)

    def per_refresh_ms(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.due else 1000 * seconds / self.due

    def per_refresh_ms_in(self, kind: str) -> float:
        """Wall time in calls of ``kind`` per due connection, summed over threads."""
        return 1000 * self.seconds_by_kind.get(kind, 0.0) / self.due if self.due else 0.0

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "concurrency": self.concurrency,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "throughput_per_s": round(self.throughput, 2),
            "due": self.due,
            "outcomes": self.outcomes,
            "items_read_by_due_query": self.items_read,
            "aws_calls": self.aws_calls,
            "capsule_calls": self.capsule_calls,
            "cpu_ms_per_refresh": {
                "connector": rounded(self.per_refresh_ms(self.connector_cpu_s)),
                "emulator": rounded(self.per_refresh_ms(self.emulator_cpu_s)),
                "moto": rounded(self.per_refresh_ms(self.moto_cpu_s)),
            },
            "mean_ms_by_call": {
                name: round(1000 * self.seconds_by_call[name] / self.count_by_call[name], 3)
                for name in sorted(self.count_by_call)
            },
            "count_by_call": dict(sorted(self.count_by_call.items())),
            "ms_per_refresh_by_kind": {
                kind: round(self.per_refresh_ms_in(kind), 3)
                for kind in sorted(self.seconds_by_kind)
                if kind != "emulator"  # includes idle keep-alive waits: not a figure
            },
        }


def _item(
    connection_id: str, *, tokens: bytes, expires_at: int, due_at: int, now: int
) -> dict[str, Any]:
    """An item in the shape ``ConnectionStore.save_authorized`` writes."""
    subdomain, user_id = connection_id.split(":")
    return {
        "connection_id": {"S": connection_id},
        "subdomain": {"S": subdomain},
        "site_name": {"S": _ACCOUNT.site_name},
        "site_url": {"S": f"https://{subdomain}.capsulecrm.com"},
        "user_id": {"S": user_id},
        "user_name": {"S": _ACCOUNT.user_name},
        "username": {"S": _ACCOUNT.username},
        "scope": {"S": "read write"},
        "status": {"S": connections.ACTIVE},
        "tokens": {"B": tokens},
        "expires_at": {"N": str(expires_at)},
        "refresh_queue": {"S": connections.QUEUE},
        "refresh_due_at": {"N": str(due_at)},
        "failure_count": {"N": "0"},
        "connected_at": {"N": str(now - 86_400)},
        "updated_at": {"N": str(now - 86_400)},
        "created_at": {"N": str(now - 86_400)},
        "version": {"N": "1"},
    }


def _write(table: str, items: list[dict[str, Any]]) -> None:
    """BatchWriteItem, 25 items a request, a few requests in flight."""
    dynamodb = aws.dynamodb()

    def write_batch(batch: list[dict[str, Any]]) -> None:
        pending: Any = {table: [{"PutRequest": {"Item": item}} for item in batch]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems")

    batches = [items[start : start + _BATCH] for start in range(0, len(items), _BATCH)]
    with ThreadPoolExecutor(_SEED_WORKERS, thread_name_prefix="seed") as pool:
        list(pool.map(write_batch, batches))


def due_ids(due: int) -> list[str]:
    return [f"due{n:05d}:1" for n in range(due)]


def seed_idle(local: ServerStack, count: int) -> None:
    now = int(time.time())
    items = [
        _item(
            f"idle{n:05d}:1",
            tokens=_IDLE_BLOB,
            expires_at=now + 7 * 86_400,
            due_at=now + 86_400 + n % (5 * 86_400),  # spread over the coming days
            now=now,
        )
        for n in range(count)
    ]
    _write(local.stack.connections_table, items)


def seed_due(local: ServerStack, due: int) -> None:
    """(Re)write the due connections with fresh grants: each run starts from the same state."""
    settings = local.settings
    now = int(time.time())
    items = []
    for n, connection_id in enumerate(due_ids(due)):
        grant = local.emulator.issue_tokens_for(_ACCOUNT.subdomain, _ACCOUNT.user_id)
        sealed = crypto.seal(
            settings.token_key_id,
            connection_id,
            crypto.TokenPair(grant["access_token"], grant["refresh_token"]),
        )
        items.append(
            _item(
                connection_id,
                tokens=sealed,
                expires_at=now + 20 * 3600,
                due_at=now - 3600 - n,
                now=now,
            )
        )
    _write(local.stack.connections_table, items)


def _measure(
    local: ServerStack, settings: Settings, recorder: Recorder, concurrency: int
) -> RunResult:
    run_settings = dataclasses.replace(settings, refresh_concurrency=concurrency)
    recorder.reset()
    with recorder.recording() as calls:
        moto0 = local.moto.cpu_seconds()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = refresh_flow.refresh_due(run_settings, remaining_ms=lambda: 10**9)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        moto1 = local.moto.cpu_seconds()
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    by_kind: dict[str, float] = defaultdict(float)
    cpu_by_kind: dict[str, float] = defaultdict(float)
    for call in calls:
        seconds[call.name] += call.seconds
        counts[call.name] += 1
        by_kind[call.kind] += call.seconds
        cpu_by_kind[call.kind] += call.cpu_seconds
    return RunResult(
        concurrency=concurrency,
        wall_s=wall,
        cpu_s=cpu,
        due=report.due,
        outcomes=dict(report.outcomes),
        items_read=recorder.items_read["Query"],
        calls=len(calls),
        aws_calls=sum(1 for call in calls if call.kind == "aws"),
        capsule_calls=sum(1 for call in calls if call.kind == "capsule"),
        moto_cpu_s=None if moto0 is None or moto1 is None else moto1 - moto0,
        seconds_by_call=dict(seconds),
        count_by_call=dict(counts),
        seconds_by_kind=dict(by_kind),
        cpu_seconds_by_kind=dict(cpu_by_kind),
    )


@dataclass
class ScaleResult:
    total: int
    due: int
    latency_s: float
    seed_s: float
    memory_mb: int  # RefreshFunction's, from template.yaml: its CPU share follows it
    runs: list[RunResult]

    @property
    def sequential(self) -> RunResult:
        return next((run for run in self.runs if run.concurrency == 1), self.runs[0])

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.total,
            "due": self.due,
            "capsule_latency_s": self.latency_s,
            "seed_s": round(self.seed_s, 2),
            "refresh_memory_mb": self.memory_mb,
            "moto": "own process",
            "runs": [run.as_dict() for run in self.runs],
        }


def measure(total: int, due: int, concurrencies: Sequence[int], latency: float) -> ScaleResult:
    recorder = Recorder()
    with server_stack(accounts=[_ACCOUNT]) as local:
        recorder.capsule_base_url = local.emulator.url
        seeded = time.perf_counter()
        seed_idle(local, total - due)
        seed_s = time.perf_counter() - seeded
        local.emulator.faults.add("latency", target="token", times=None, seconds=latency)
        # A warm container: clients made, client secret read. The first use's cost is in the
        # first-invocation figures; per refresh, the budget is the steady state.
        seed_due(local, min(due, 4))
        refresh_flow.refresh_due(local.settings, remaining_ms=lambda: 10**9)
        runs = []
        with installed(recorder):
            for concurrency in concurrencies:
                seed_due(local, due)
                runs.append(_measure(local, local.settings, recorder, concurrency))
        memory_mb = local.template.function("RefreshFunction").memory_mb
    return ScaleResult(total, due, latency, seed_s, memory_mb, runs)
