"""``python -m bench [--quick] [--build]``: one table, bench/results.json, a chart.

A full run writes bench/results.json and bench/refresh-throughput.png (the figures the
README quotes); --quick (what CI runs) writes into bench/out/ so it never replaces them.

Exits 0 whether or not targets are met (each row says PASS or MISS); 1 only when a section
itself crashed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import calls, cold_start, deploy_size, refresh_scale, report
from bench.common import BENCH_DIR, MISS, Row, machine

RESULTS_NAME = "results.json"
CHART_NAME = "refresh-throughput.png"


@dataclass(frozen=True)
class Sizes:
    import_repetitions: int
    warm_up: bool
    connections: int
    due: int
    concurrencies: tuple[int, ...]
    capsule_latency_s: float = 0.1


# 9 imports a handler, not 5: on a shared 2-core machine the median of 5 moved by 10 ms.
FULL = Sizes(9, True, 10_000, 100, (1, 4, 16, 32))
QUICK = Sizes(1, True, 1_000, 10, (1, 4))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, for CI (well under a minute)"
    )
    parser.add_argument(
        "--build", action="store_true", help="run sam build first, even if .aws-sam/build exists"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = BENCH_DIR / "out" if args.quick else BENCH_DIR
    out.mkdir(exist_ok=True)
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
        return refresh_scale.rows(result)

    _section(
        cold_start.SECTION,
        rows,
        crashed,
        lambda: cold_start.run(sizes.import_repetitions, warm_up=sizes.warm_up),
    )
    _section(calls.SECTION, rows, crashed, calls.run)
    _section(refresh_scale.SECTION, rows, crashed, scale_rows)
    _section(
        deploy_size.SECTION,
        rows,
        crashed,
        lambda: deploy_size.run(quick=args.quick, rebuild=args.build),
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
            "import_repetitions": sizes.import_repetitions,
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
    print(
        f"\n{len(missed)} missed target(s); results in {results_path.relative_to(BENCH_DIR.parent)}"
        + (f", chart in {chart_path.relative_to(BENCH_DIR.parent)}" if scale else "")
    )
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
