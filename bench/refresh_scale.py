"""Section 3: the scheduled refresh over a large table with a few connections due.

``total`` connections live in moto's ConnectionsTable; ``due`` of them are due now and hold
real KMS-sealed tokens whose refresh tokens the emulator knows. The emulator answers every
token request after ``latency`` seconds. Each concurrency gets the same ``due`` connections,
re-seeded before its run. Reported: items the due query reads, wall time, throughput, the
speed-up over sequential, and where the time goes (per-call time of moto and of Capsule, CPU
time of the process: moto is pure Python in this process, under the same GIL as the workers).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import SKIP, Row, verdict
from bench.harness import BenchStack, bench_stack
from bench.instrument import Recorder, installed
from capsule_oauth.config import Settings
from capsule_oauth.flows import refresh as refresh_flow
from capsule_oauth.store import aws, connections, crypto
from local.capsule_emulator import Account

SECTION = "refresh at scale"
ITEMS_READ_FACTOR = 1.1
SPEEDUP_CONCURRENCY = 16
SPEEDUP_TARGET = 10.0
_ACCOUNT = Account("benchco", "Bench Co.", 1, "bench", "Bench User")
_BATCH = 25
_IDLE_BLOB = bytes(range(256)) + bytes(64)  # about the size of a sealed pair; never decrypted


@dataclass
class RunResult:
    concurrency: int
    wall_s: float
    cpu_s: float
    due: int
    outcomes: dict[str, int]
    items_read: int
    calls: int
    aws_calls: int
    capsule_calls: int
    seconds_by_call: dict[str, float] = field(default_factory=dict)
    count_by_call: dict[str, int] = field(default_factory=dict)
    seconds_by_kind: dict[str, float] = field(default_factory=dict)
    cpu_seconds_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.due / self.wall_s if self.wall_s > 0 else 0.0

    def per_refresh_ms(self, kind: str, *, cpu: bool = False) -> float:
        """Wall (or CPU) time in calls of ``kind`` per due connection, summed over threads."""
        by_kind = self.cpu_seconds_by_kind if cpu else self.seconds_by_kind
        return 1000 * by_kind.get(kind, 0.0) / self.due if self.due else 0.0

    def as_dict(self) -> dict[str, Any]:
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
            "mean_ms_by_call": {
                name: round(1000 * self.seconds_by_call[name] / self.count_by_call[name], 3)
                for name in sorted(self.count_by_call)
            },
            "count_by_call": dict(sorted(self.count_by_call.items())),
            "ms_per_refresh_by_kind": {
                kind: round(self.per_refresh_ms(kind), 3) for kind in sorted(self.seconds_by_kind)
            },
            "cpu_ms_per_refresh_by_kind": {
                kind: round(self.per_refresh_ms(kind, cpu=True), 3)
                for kind in sorted(self.cpu_seconds_by_kind)
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
    dynamodb = aws.dynamodb()
    for start in range(0, len(items), _BATCH):
        pending: Any = {
            table: [{"PutRequest": {"Item": item}} for item in items[start : start + _BATCH]]
        }
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems")


def due_ids(due: int) -> list[str]:
    return [f"due{n:05d}:1" for n in range(due)]


def seed_idle(local: BenchStack, count: int) -> None:
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


def seed_due(local: BenchStack, due: int) -> None:
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


def _measure(settings: Settings, recorder: Recorder, concurrency: int) -> RunResult:
    run_settings = dataclasses.replace(settings, refresh_concurrency=concurrency)
    recorder.reset()
    with recorder.recording() as calls:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = refresh_flow.refresh_due(run_settings, remaining_ms=lambda: 10**9)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
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
    runs: list[RunResult]

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.total,
            "due": self.due,
            "capsule_latency_s": self.latency_s,
            "seed_s": round(self.seed_s, 2),
            "runs": [run.as_dict() for run in self.runs],
        }


def measure(total: int, due: int, concurrencies: Sequence[int], latency: float) -> ScaleResult:
    recorder = Recorder()
    with bench_stack(accounts=[_ACCOUNT]) as local:
        recorder.capsule_base_url = local.emulator.url
        seeded = time.perf_counter()
        seed_idle(local, total - due)
        seed_s = time.perf_counter() - seeded
        local.emulator.faults.add("latency", target="token", times=None, seconds=latency)
        runs = []
        with installed(recorder):
            for concurrency in concurrencies:
                seed_due(local, due)
                runs.append(_measure(local.settings, recorder, concurrency))
    return ScaleResult(total, due, latency, seed_s, runs)


def rows(result: ScaleResult) -> list[Row]:
    out: list[Row] = []
    sequential = next((run for run in result.runs if run.concurrency == 1), result.runs[0])
    worst_read = max(run.items_read for run in result.runs)
    limit = ITEMS_READ_FACTOR * result.due
    out.append(
        Row(
            SECTION,
            f"items read by the due query ({result.total:,} connections, {result.due} due)",
            f"{worst_read} (= {worst_read / result.due:.2f} x due)",
            f"<= {limit:g} (1.1 x due)",
            verdict(worst_read <= limit),
            value=worst_read,
            unit="items",
        )
    )
    for run in result.runs:
        refreshed = run.outcomes.get("refreshed", 0)
        speedup = sequential.wall_s / run.wall_s if run.wall_s else 0.0
        target, status = "", ""
        if run.concurrency == SPEEDUP_CONCURRENCY:
            target = f">= {SPEEDUP_TARGET:g}x sequential"
            status = verdict(speedup >= SPEEDUP_TARGET)
        out.append(
            Row(
                SECTION,
                f"refresh_due, concurrency {run.concurrency}",
                f"{run.wall_s:.2f} s, {run.throughput:.1f} conn/s, {speedup:.1f}x"
                f" (cpu {run.cpu_s / run.wall_s:.0%} of wall, {refreshed}/{run.due} refreshed)",
                target,
                status if refreshed == run.due else "MISS",
                value=round(speedup, 2),
                unit="x sequential",
                detail=run.as_dict(),
            )
        )
    if not any(run.concurrency == SPEEDUP_CONCURRENCY for run in result.runs):
        out.append(
            Row(
                SECTION,
                f"refresh_due, concurrency {SPEEDUP_CONCURRENCY}",
                "not run (--quick)",
                f">= {SPEEDUP_TARGET:g}x sequential",
                SKIP,
            )
        )
    # Where the time goes, from the sequential run: nothing overlaps there.
    per_refresh = 1000 * sequential.wall_s / sequential.due
    aws_ms = sequential.per_refresh_ms("aws")  # boto3 client + moto, in this process
    moto_ms = sequential.per_refresh_ms("moto")  # moto's server side alone
    moto_cpu = sequential.per_refresh_ms("moto", cpu=True)
    capsule_ms = sequential.per_refresh_ms("capsule")  # includes the injected latency
    emulator_cpu = sequential.per_refresh_ms("emulator", cpu=True)
    cpu_ms = 1000 * sequential.cpu_s / sequential.due
    ceiling = per_refresh / cpu_ms if cpu_ms else 0.0
    # Against real AWS and Capsule the server sides run elsewhere, off this process's GIL:
    # per refresh, the wall loses moto's wall time (a real call adds network time instead,
    # not counted) and the CPU loses moto's and the emulator's CPU time.
    cpu_without_moto = max(cpu_ms - moto_cpu - emulator_cpu, 0.1)
    ceiling_without_moto = (per_refresh - moto_ms) / cpu_without_moto
    out.append(
        Row(
            SECTION,
            "sequential, per refresh: wall / AWS calls / of which moto / Capsule",
            f"{per_refresh:.1f} / {aws_ms:.1f} / {moto_ms:.1f} / {capsule_ms:.1f} ms",
            value=round(per_refresh, 2),
            unit="ms",
            detail={
                "aws_ms_per_refresh": round(aws_ms, 2),
                "moto_server_ms_per_refresh": round(moto_ms, 2),
                "moto_server_cpu_ms_per_refresh": round(moto_cpu, 2),
                "capsule_ms_per_refresh": round(capsule_ms, 2),
                "mean_ms_by_call": sequential.as_dict()["mean_ms_by_call"],
            },
        )
    )
    out.append(
        Row(
            SECTION,
            "CPU per refresh (one GIL) -> speed-up ceiling",
            f"{cpu_ms:.1f} ms (moto {moto_cpu:.1f}, emulator {emulator_cpu:.1f}) ->"
            f" {ceiling:.1f}x; client side only {cpu_without_moto:.1f} ms ->"
            f" {ceiling_without_moto:.0f}x",
            value=round(ceiling, 2),
            unit="x sequential",
            detail={
                "cpu_ms_per_refresh": round(cpu_ms, 2),
                "moto_cpu_ms_per_refresh": round(moto_cpu, 2),
                "emulator_cpu_ms_per_refresh": round(emulator_cpu, 2),
                "cpu_ms_per_refresh_without_moto": round(cpu_without_moto, 2),
                "ceiling_without_moto": round(ceiling_without_moto, 2),
            },
        )
    )
    return out
