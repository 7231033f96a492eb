"""``python -m bench [--quick] [--build]``: one table, bench/results.json, a chart.

A full run writes bench/results.json and bench/refresh-throughput.png (the figures the
README quotes); --quick (what CI runs) writes into bench/out/ so it never replaces them, and
judges no noisy figure (those rows say SKIP).

Exits 0 whether or not targets are met (each row says PASS, MISS or SKIP, a SKIP with its
reason); 1 only when a section itself crashed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    callback_latency,
    calls,
    capsule_calls,
    cold_start,
    deploy_size,
    first_invocation,
    refresh_budget,
    refresh_scale,
    report,
)
from bench.common import BENCH_DIR, MISS, ROOT, SKIP, Row, machine

RESULTS_NAME = "results.json"
CHART_NAME = "refresh-throughput.png"


@dataclass(frozen=True)
class Sizes:
    import_pairs: int  # handler / floor pairs per function (and per what-if)
    first_invocations: int  # rounds of start, callback, refresh in fresh interpreters
    connections: int
    due: int
    concurrencies: tuple[int, ...]
    judged: bool  # False: noisy figures are reported, never judged (SKIP)
    callbacks: int = 9  # callbacks timed against Capsule at capsule_latency_s
    capsule_latency_s: float = 0.1


# 20 pairs: on a shared 2-core machine, 6 left the median's 95% interval 50-90 ms wide, and
# the width shrinks with the square root of the pairs.
FULL = Sizes(20, 7, 10_000, 100, (1, 4, 16, 32), judged=True)
QUICK = Sizes(2, 1, 1_000, 10, (1, 4), judged=False, callbacks=2)


def _section(name: str, rows: list[Row], crashed: list[str], run: Callable[[], list[Row]]) -> None:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        rows.extend(run())
    except Exception as error:
        crashed.append(name)
        traceback.print_exc(file=sys.stderr)
        rows.append(
            Row(name, "section crashed", f"{type(error).__name__}: {error}"[:200], "", MISS)
        )
    print(f"bench: {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, for CI (about a minute); judges nothing noisy",
    )
    parser.add_argument(
        "--build", action="store_true", help="run sam build first, even if .aws-sam/build exists"
    )
    parser.add_argument(
        "--out", type=Path, help="write results.json and the chart here instead (a trial run)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = args.out or (BENCH_DIR / "out" if args.quick else BENCH_DIR)
    out.mkdir(parents=True, exist_ok=True)
    results_path, chart_path = out / RESULTS_NAME, out / CHART_NAME
    started = time.perf_counter()
    host = machine()
    host["load_average_before"] = list(os.getloadavg())

    rows: list[Row] = []
    crashed: list[str] = []
    scale: list[refresh_scale.ScaleResult] = []

    def scale_rows() -> list[Row]:
        result = refresh_scale.measure(
            sizes.connections, sizes.due, sizes.concurrencies, sizes.capsule_latency_s
        )
        scale.append(result)
        return refresh_budget.rows(result, cores=host["usable_cores"], judged=sizes.judged)

    # The build first: the cold-import section pairs it with a copy without its bytecode.
    build_note = deploy_size.ensure_build(quick=args.quick, rebuild=args.build)
    _section(
        cold_start.SECTION,
        rows,
        crashed,
        lambda: cold_start.run(sizes.import_pairs, warm_up=True, judged=sizes.judged),
    )
    _section(
        first_invocation.SECTION,
        rows,
        crashed,
        lambda: first_invocation.run(sizes.first_invocations),
    )
    _section(calls.SECTION, rows, crashed, calls.run)
    _section(
        callback_latency.SECTION,
        rows,
        crashed,
        lambda: callback_latency.run(sizes.callbacks, sizes.capsule_latency_s),
    )
    _section(capsule_calls.SECTION, rows, crashed, lambda: capsule_calls.run(judged=sizes.judged))
    _section(refresh_scale.SECTION, rows, crashed, scale_rows)
    _section(
        deploy_size.SECTION,
        rows,
        crashed,
        lambda: deploy_size.run(quick=args.quick, note=build_note),
    )
    host["load_average_after"] = list(os.getloadavg())
    elapsed = time.perf_counter() - started

    if scale:
        report.chart(chart_path, scale[0], host)
    payload: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "elapsed_s": round(elapsed, 1),
        "machine": host,
        "sizes": {
            "import_pairs": sizes.import_pairs,
            "first_invocations": sizes.first_invocations,
            "connections": sizes.connections,
            "due": sizes.due,
            "concurrencies": list(sizes.concurrencies),
            "capsule_latency_s": sizes.capsule_latency_s,
        },
        "rows": [row.as_dict() for row in rows],
        "refresh_scale": scale[0].as_dict() if scale else None,
        "crashed_sections": crashed,
    }
    report.write_json(results_path, payload)

    print(report.machine_header(host))
    print(f"mode: {payload['mode']}; {elapsed:.0f} s\n")
    print(report.table(rows))
    missed = [row for row in rows if row.status == MISS]
    skipped = [row for row in rows if row.status == SKIP]
    print(
        f"\n{len(missed)} missed target(s), {len(skipped)} not judged (SKIP);"
        f" results in {_shown(results_path)}"
        + (f", chart in {_shown(chart_path)}" if scale else "")
    )
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
