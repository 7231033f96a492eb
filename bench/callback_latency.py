"""Section: what a person waits for at the callback, with Capsule answering in 100 ms.

The callback needs two round trips to Capsule at least: the token comes first, then
users/current and site, which do not depend on each other. The floor is therefore twice
Capsule's latency; the callback's wall time is measured against it, in a warm container on
moto and the emulator, with the emulator holding every answer for ``latency`` seconds.
"""

from __future__ import annotations

import statistics
import time

from bench.calls import Flows
from bench.common import SKIP, Row, verdict
from bench.harness import bench_stack, start_event
from bench.instrument import Recorder, installed
from local.capsule_emulator import DEFAULT_ACCOUNTS

SECTION = "callback wait"
RATIO_TARGET = 1.25
OWN_TARGET_MS = 50.0
MIN_SAMPLES = 5


def _measure(samples: int, latency: float) -> list[float]:
    recorder = Recorder()
    account = DEFAULT_ACCOUNTS[0]
    walls: list[float] = []
    with bench_stack() as local:
        recorder.capsule_base_url = local.emulator.url
        with installed(recorder):
            flows = Flows(local, recorder)
            flows.callback(flows.start(), account)  # warm the container first: not counted
            for sample in range(samples):
                # A new owner each time: a first connection, no replaced grant to revoke
                # (a reconnect adds that one round trip to Capsule).
                started = flows.start(start_event(f"bench-owner-{sample}"))
                event = flows.approved_callback_event(started, account)
                local.emulator.faults.add("latency", target="any", times=None, seconds=latency)
                try:
                    begun = time.perf_counter()
                    flows.run_callback(event)
                    walls.append(time.perf_counter() - begun)
                finally:
                    local.emulator.faults.clear()
    return walls


def run(samples: int, latency: float = 0.1) -> list[Row]:
    walls = _measure(samples, latency)
    floor = 2 * latency
    median = statistics.median(walls)
    spread = (max(walls) - min(walls)) * 1000
    own_ms = (median - floor) * 1000
    judged = len(walls) >= MIN_SAMPLES
    why = "" if judged else f"only {len(walls)} sample(s): not judged"
    return [
        Row(
            SECTION,
            f"callback wall time, Capsule at {latency * 1000:.0f} ms (median of {len(walls)})",
            f"{median * 1000:.0f} ms (range {spread:.0f} ms) = {median / floor:.2f} x the floor"
            f" of two round trips ({floor * 1000:.0f} ms)",
            f"<= {RATIO_TARGET} x floor",
            verdict(median <= RATIO_TARGET * floor) if judged else SKIP,
            value=median * 1000,
            unit="ms",
            detail={"samples_ms": [w * 1000 for w in walls], "floor_ms": floor * 1000, "why": why},
        ),
        Row(
            SECTION,
            "callback's own + AWS time (wall - floor)",
            f"{own_ms:.0f} ms",
            f"<= {OWN_TARGET_MS:.0f} ms",
            verdict(own_ms <= OWN_TARGET_MS) if judged else SKIP,
            value=own_ms,
            unit="ms",
        ),
    ]
