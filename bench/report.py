"""The table on stdout, ``bench/results.json`` and the refresh throughput chart."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import Row
from bench.refresh_budget import SPEEDUP_CONCURRENCY, cpu_budget_ms
from bench.refresh_scale import ScaleResult

HEADERS = ("section", "metric", "value", "target", "status")
MAX_WIDTHS = (16, 58, 64, 26, 10)


def table(rows: Sequence[Row]) -> str:
    """Columns sized to their content up to MAX_WIDTHS; longer cells wrap onto more lines."""
    cells = [(r.section, r.metric, r.shown, r.target, r.status) for r in rows]
    widths = [
        min(limit, max([len(header)] + [len(cell[i]) for cell in cells]))
        for i, (header, limit) in enumerate(zip(HEADERS, MAX_WIDTHS, strict=True))
    ]

    def lines(values: Sequence[str]) -> list[str]:
        wrapped = [
            textwrap.wrap(value, width, break_on_hyphens=False) or [""]
            for value, width in zip(values, widths, strict=True)
        ]
        height = max(len(column) for column in wrapped)
        return [
            "  ".join(
                (column[n] if n < len(column) else "").ljust(width)
                for column, width in zip(wrapped, widths, strict=True)
            ).rstrip()
            for n in range(height)
        ]

    out = [*lines(HEADERS), "  ".join("-" * width for width in widths)]
    previous = None
    for cell in cells:
        if previous is not None and cell[0] != previous:
            out.append("")
        out.extend(lines([cell[0] if cell[0] != previous else "", *cell[1:]]))
        previous = cell[0]
    return "\n".join(out)


def machine_header(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_before")
    return (
        f"machine: {machine['cpu_model']}, {machine['cores']} cores"
        f" ({machine['usable_cores']} usable), Python {machine['python']}"
        + (f", load average {load[0]:.2f} at start" if load else "")
    )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def chart(path: Path, result: ScaleResult, machine: dict[str, Any]) -> None:
    runs = sorted(result.runs, key=lambda run: run.concurrency)
    concurrency = [run.concurrency for run in runs]
    throughput = [run.throughput for run in runs]
    sequential = result.sequential
    busiest = runs[-1]
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    axes.plot(
        concurrency, throughput, "o-", color="tab:blue", label="measured (moto in its own process)"
    )
    for x, y in zip(concurrency, throughput, strict=True):
        axes.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center")
    # Perfect overlap: ceil(due / c) rounds of one sequential refresh each.
    per_refresh_s = sequential.wall_s / sequential.due
    ideal = [result.due / (math.ceil(result.due / c) * per_refresh_s) for c in concurrency]
    axes.plot(concurrency, ideal, "--", color="tab:gray", label="perfect overlap (rounds of c)")
    tops = [*ideal, *throughput]
    # CPU ceilings, from the busiest run's CPU per refresh: a process can run one core of
    # Python at a time; a Lambda gets its memory's share of a vCPU.
    vcpu, _ = cpu_budget_ms(result.memory_mb, result.latency_s, SPEEDUP_CONCURRENCY)
    ceilings = (
        (
            busiest.cpu_s,
            1.0,
            "tab:red",
            "CPU ceiling of this process (connector + emulator, one core)",
        ),
        (busiest.moto_cpu_s, 1.0, "tab:orange", "CPU ceiling of moto's process (one core)"),
        (
            busiest.connector_cpu_s,
            vcpu,
            "tab:green",
            f"CPU ceiling of one {result.memory_mb} MB Lambda ({vcpu:.2f} vCPU), connector only",
        ),
    )
    for cpu_s, cores, color, label in ceilings:
        if cpu_s:
            ceiling = cores * busiest.due / cpu_s
            axes.axhline(ceiling, color=color, linestyle=":", label=label)
            tops.append(ceiling)
    axes.set_xscale("log", base=2)
    axes.set_xticks(concurrency, [str(c) for c in concurrency])
    axes.set_xlabel("REFRESH_CONCURRENCY")
    axes.set_ylabel("connections refreshed per second")
    axes.set_ylim(bottom=0, top=max(tops) * 1.5)  # room for the legend above the lines
    axes.set_title(
        f"refresh_due: {result.due} due of {result.total:,} connections,"
        f" Capsule answers in {result.latency_s * 1000:.0f} ms",
        fontsize=10,
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.text(
        0.99,
        0.01,
        f"{machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}",
        ha="right",
        fontsize=7,
        color="gray",
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
