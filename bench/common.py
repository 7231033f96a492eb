"""What every section shares: where things are, one result row, the machine it ran on."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
LAYER_DIR = ROOT / "layers" / "capsule_oauth"
FUNCTIONS_DIR = ROOT / "functions"
BUILD_DIR = ROOT / ".aws-sam" / "build"

MET = "PASS"  # target met
MISS = "MISS"
INFO = ""
SKIP = "SKIP"


@dataclass(frozen=True)
class Row:
    """One line of the table. ``value`` is the number (or text) behind ``shown``."""

    section: str
    metric: str
    shown: str
    target: str = ""
    status: str = INFO
    value: float | int | str | bool | list[str] | None = None
    unit: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "shown": self.shown,
            "target": self.target,
            "status": self.status,
            **({"detail": self.detail} if self.detail else {}),
        }


def verdict(ok: bool) -> str:
    return MET if ok else MISS


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"model name", "Model", "cpu model"} and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": {
            name: _version(name)
            for name in ("boto3", "botocore", "moto", "aws-lambda-powertools", "requests")
        },
    }
