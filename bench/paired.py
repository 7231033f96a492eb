"""Paired figures: the median of per-pair differences, its spread, and when it may be judged.

Two things sampled separately on a shared machine drift apart by more than a 20 ms target;
sampled in pairs (one right after the other, order alternating), the drift hits both sides
of each pair alike and cancels in the difference. The spread is reported two ways: the
interquartile range of the differences (how much one pair varies) and a bootstrap 95 %
interval of their median (how well the median itself is known). Standard library only, and
seeded, so the same samples always give the same interval.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import MET, MISS, SKIP

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 20_240_512
# Fewer pairs than this give an interval that only looks narrow (one pair: zero width).
MIN_PAIRS = 5


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartile (inclusive method: stays inside the data for small samples)."""
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(q1), float(q3)


def bootstrap_median_interval(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median: resample with replacement, take the
    median of each resample, and cut ``(1 - confidence) / 2`` off each end."""
    if not values:
        return float("nan"), float("nan")
    rng = random.Random(seed)  # noqa: S311 - a reproducible resample, not a secret
    size = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=size)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = medians[round(tail * (resamples - 1))]
    high = medians[round((1 - tail) * (resamples - 1))]
    return float(low), float(high)


@dataclass(frozen=True)
class PairedFigure:
    """The median of ``a - b`` over pairs, with its interquartile range and 95 % interval."""

    differences: tuple[float, ...]
    median: float
    q1: float
    q3: float
    low: float  # bootstrap interval of the median
    high: float

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> PairedFigure:
        if len(a) != len(b):
            raise ValueError(f"unpaired samples: {len(a)} and {len(b)}")
        return cls.from_differences([x - y for x, y in zip(a, b, strict=True)])

    @classmethod
    def from_differences(cls, differences: Sequence[float]) -> PairedFigure:
        values = tuple(float(d) for d in differences)
        q1, q3 = quartiles(values)
        low, high = bootstrap_median_interval(values)
        middle = float(statistics.median(values)) if values else float("nan")
        return cls(values, middle, q1, q3, low, high)

    @property
    def pairs(self) -> int:
        return len(self.differences)

    @property
    def width(self) -> float:
        return self.high - self.low

    def shown(self, unit: str = "ms") -> str:
        return (
            f"{self.median:+.1f} {unit} (IQR {self.q1:+.1f} to {self.q3:+.1f};"
            f" 95% CI {self.low:+.1f} to {self.high:+.1f}; {self.pairs} pairs)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "median": round(self.median, 2),
            "iqr": [round(self.q1, 2), round(self.q3, 2)],
            "ci95": [round(self.low, 2), round(self.high, 2)],
            "differences": [round(d, 2) for d in self.differences],
        }


def judge_at_most(figure: PairedFigure, target: float, *, judged: bool = True) -> tuple[str, str]:
    """PASS or MISS on the median against ``<= target``, but only when the 95 % interval is
    narrower than the target itself; otherwise SKIP, with the reason."""
    if not judged:
        return SKIP, "not judged in a quick run"
    if figure.pairs < MIN_PAIRS:
        return SKIP, f"{figure.pairs} pairs: too few for an interval (need {MIN_PAIRS})"
    if not figure.width < target:
        return SKIP, f"95% CI {figure.width:.1f} wide, not narrower than the {target:g} target"
    return (MET if figure.median <= target else MISS), ""


def judge_positive(figure: PairedFigure, *, judged: bool = True) -> tuple[str, str]:
    """PASS when the whole 95 % interval is above zero (the difference is real), MISS when
    it is wholly at or below zero, SKIP when it straddles zero or there are too few pairs."""
    if not judged:
        return SKIP, "not judged in a quick run"
    if figure.pairs < MIN_PAIRS:
        return SKIP, f"{figure.pairs} pairs: too few for an interval (need {MIN_PAIRS})"
    if figure.low > 0:
        return MET, ""
    if figure.high <= 0:
        return MISS, ""
    return SKIP, "95% CI includes 0"
