"""What the refresh-at-scale figures decide: items read, the speed-up, and the CPU budget.

The speed-up target (concurrency 16 at least 10 x sequential) needs a core for the
connector's process and one for moto's, some room for the rest, and neither process's CPU
per refresh so high that it caps the throughput below 10 x sequential (moto's can: it is
pure Python). Where the machine cannot show the speed-up, the connector's own CPU per
refresh is judged instead: one RefreshFunction (its memory from template.yaml; Lambda gives
a full vCPU at 1,769 MB, so 1,024 MB is about 0.58 vCPU) sustains concurrency 16 with
Capsule answering in 100 ms only if 16 refreshes' CPU fits in 100 ms of that share:
CPU per refresh <= 0.58 x 100 ms / 16 = 3.6 ms.
"""

from __future__ import annotations

from bench.common import INFO, MET, MISS, SKIP, Row
from bench.refresh_scale import SECTION, RunResult, ScaleResult

ITEMS_READ_FACTOR = 1.1
SPEEDUP_CONCURRENCY = 16
SPEEDUP_TARGET = 10.0
MIN_CORES_FOR_SPEEDUP = 3  # the connector's process, moto's, and the rest
MB_PER_VCPU = 1769  # Lambda: one full vCPU at 1,769 MB, the share proportional below


def cpu_budget_ms(memory_mb: int, latency_s: float, concurrency: int) -> tuple[float, float]:
    """(vCPU share, connector CPU per refresh that share allows at ``concurrency``)."""
    vcpu = memory_mb / MB_PER_VCPU
    return vcpu, vcpu * latency_s * 1000 / concurrency


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _busiest(result: ScaleResult) -> RunResult:
    """The run the budget is judged on: concurrency 16 if it ran, else the highest."""
    return next(
        (run for run in result.runs if run.concurrency == SPEEDUP_CONCURRENCY),
        max(result.runs, key=lambda run: run.concurrency),
    )


def _cannot_show(run: RunResult, sequential: RunResult, cores: int) -> list[str]:
    """Why this machine cannot show the speed-up, if it cannot: too few cores, or a process
    (moto's, or this one) whose CPU per refresh caps the throughput below what 10x needs."""
    needed = SPEEDUP_TARGET * sequential.throughput
    reasons = []
    if cores < MIN_CORES_FOR_SPEEDUP:
        reasons.append(f"{cores} usable cores (the connector's process and moto's need one each)")
    for who, cpu_s in (("moto's process", run.moto_cpu_s), ("this process", run.cpu_s)):
        per_refresh = run.per_refresh_ms(cpu_s)
        if per_refresh and 1000 / per_refresh < needed:
            reasons.append(
                f"{who} tops out at {1000 / per_refresh:.0f} conn/s"
                f" ({per_refresh:.1f} ms CPU per refresh), under the {needed:.0f} that 10x needs"
            )
    return reasons


def _speedup_status(
    run: RunResult, sequential: RunResult, speedup: float, cores: int
) -> tuple[str, str]:
    if run.outcomes.get("refreshed", 0) != run.due:
        return MISS, "not every due connection was refreshed"
    if speedup >= SPEEDUP_TARGET:
        return MET, ""
    reasons = _cannot_show(run, sequential, cores)
    if reasons:
        return SKIP, "this machine cannot show it: " + "; ".join(reasons)
    return MISS, ""


def rows(result: ScaleResult, *, cores: int, judged: bool) -> list[Row]:
    """``cores``: usable on this machine; ``judged``: False in a quick run (tiny, noisy)."""
    out: list[Row] = []
    sequential = result.sequential
    worst_read = max(run.items_read for run in result.runs)
    limit = ITEMS_READ_FACTOR * result.due
    out.append(
        Row(
            SECTION,
            f"items read by the due query ({result.total:,} connections, {result.due} due)",
            f"{worst_read} (= {worst_read / result.due:.2f} x due)",
            f"<= {limit:g} (1.1 x due)",
            MET if worst_read <= limit else MISS,
            value=worst_read,
            unit="items",
        )
    )
    speedup_status = SKIP
    for run in result.runs:
        refreshed = run.outcomes.get("refreshed", 0)
        speedup = sequential.wall_s / run.wall_s if run.wall_s else 0.0
        target, status, reason = "", INFO, ""
        if refreshed != run.due:
            status, reason = MISS, "not every due connection was refreshed"
        if run.concurrency == SPEEDUP_CONCURRENCY:
            target = f">= {SPEEDUP_TARGET:g}x sequential, or the CPU budget below"
            status, reason = _speedup_status(run, sequential, speedup, cores)
            speedup_status = status
        out.append(
            Row(
                SECTION,
                f"refresh_due, concurrency {run.concurrency}",
                f"{run.wall_s:.2f} s, {run.throughput:.1f} conn/s, {speedup:.1f}x"
                f" ({refreshed}/{run.due} refreshed); CPU per refresh: connector"
                f" {_ms(run.per_refresh_ms(run.connector_cpu_s))}, emulator"
                f" {_ms(run.per_refresh_ms(run.emulator_cpu_s))}, moto"
                f" {_ms(run.per_refresh_ms(run.moto_cpu_s))} ms"
                + (f"; {status}: {reason}" if reason else ""),
                target,
                status,
                value=round(speedup, 2),
                unit="x sequential",
                detail={**run.as_dict(), "skip_reason": reason} if reason else run.as_dict(),
            )
        )
    if not any(run.concurrency == SPEEDUP_CONCURRENCY for run in result.runs):
        out.append(
            Row(
                SECTION,
                f"refresh_due, concurrency {SPEEDUP_CONCURRENCY}",
                "not run (--quick)",
                f">= {SPEEDUP_TARGET:g}x sequential, or the CPU budget below",
                SKIP,
            )
        )
    out.append(_budget_row(result, speedup_status, judged=judged))
    out.append(_sequential_row(sequential))
    return out


def _budget_row(result: ScaleResult, speedup_status: str, *, judged: bool) -> Row:
    busiest = _busiest(result)
    vcpu, budget = cpu_budget_ms(result.memory_mb, result.latency_s, SPEEDUP_CONCURRENCY)
    connector = busiest.per_refresh_ms(busiest.connector_cpu_s) or 0.0
    boto = busiest.per_refresh_ms(busiest.cpu_seconds_by_kind.get("aws", 0.0)) or 0.0
    http = busiest.per_refresh_ms(busiest.cpu_seconds_by_kind.get("capsule", 0.0)) or 0.0
    sequential = result.sequential.per_refresh_ms(result.sequential.connector_cpu_s) or 0.0
    arithmetic = (
        f"{result.memory_mb} MB = {vcpu:.2f} vCPU x {result.latency_s * 1000:.0f} ms"
        f" / {SPEEDUP_CONCURRENCY} = {budget:.1f} ms"
    )
    if not judged:
        status, reason = SKIP, "not judged in a quick run"
    elif speedup_status == SKIP:
        status, reason = (MET if connector <= budget else MISS), ""
    else:
        status, reason = INFO, "the speed-up row above is the judge on this machine"
    return Row(
        SECTION,
        "connector's own CPU per refresh (this machine's CPU; moto and the emulator not counted)",
        f"{connector:.1f} ms at concurrency {busiest.concurrency} (of which botocore"
        f" {boto:.1f}, requests to Capsule {http:.1f}, the rest {connector - boto - http:.1f};"
        f" {sequential:.1f} ms sequential): one {result.memory_mb} MB Lambda sustains"
        f" {vcpu * 1000 / connector if connector else 0:.0f} refreshes/s"
        + (f"; {status or 'not judged'}: {reason}" if reason else ""),
        f"<= {arithmetic}",
        status,
        value=round(connector, 3),
        unit="ms",
        detail={
            "concurrency": busiest.concurrency,
            "connector_cpu_ms_per_refresh": round(connector, 3),
            "botocore_cpu_ms_per_refresh": round(boto, 3),
            "requests_cpu_ms_per_refresh": round(http, 3),
            "sequential_connector_cpu_ms_per_refresh": round(sequential, 3),
            "budget_ms": round(budget, 3),
            "vcpu": round(vcpu, 3),
            "arithmetic": arithmetic,
            "skip_reason": reason,
        },
    )


def _sequential_row(sequential: RunResult) -> Row:
    """Where one refresh's wall time goes: nothing overlaps in the sequential run."""
    per_refresh = 1000 * sequential.wall_s / sequential.due
    aws_ms = sequential.per_refresh_ms_in("aws")  # client + HTTP to moto + moto
    capsule_ms = sequential.per_refresh_ms_in("capsule")  # includes the injected latency
    return Row(
        SECTION,
        "sequential, per refresh: wall / AWS calls (to moto) / Capsule (incl. latency)",
        f"{per_refresh:.1f} / {aws_ms:.1f} / {capsule_ms:.1f} ms",
        value=round(per_refresh, 2),
        unit="ms",
        detail={
            "aws_ms_per_refresh": round(aws_ms, 2),
            "capsule_ms_per_refresh": round(capsule_ms, 2),
            "mean_ms_by_call": sequential.as_dict()["mean_ms_by_call"],
        },
    )
