"""The bench's paired statistics: median of differences, its spread, and when it is judged."""

from __future__ import annotations

import os
import sys

import pytest

# Importing the bench package makes its process safe to benchmark (fake credentials, quiet
# Powertools); give the rest of the test session its environment back.
_environment, _path = dict(os.environ), list(sys.path)
from bench.common import MET, MISS, SKIP
from bench.paired import (
    PairedFigure,
    bootstrap_median_interval,
    judge_at_most,
    judge_positive,
    quartiles,
)

os.environ.clear()
os.environ.update(_environment)
sys.path[:] = _path


def test_paired_figure_is_the_median_of_per_pair_differences() -> None:
    # Given handler and floor samples that drift together, 10 ms apart in every pair
    handler = [110.0, 150.0, 95.0, 200.0, 130.0]
    floor = [100.0, 140.0, 85.0, 190.0, 120.0]

    # When they are paired
    figure = PairedFigure.of(handler, floor)

    # Then the drift cancels: every difference, the median and the interval are 10 ms
    assert figure.differences == (10.0, 10.0, 10.0, 10.0, 10.0)
    assert (figure.median, figure.q1, figure.q3) == (10.0, 10.0, 10.0)
    assert (figure.low, figure.high) == (10.0, 10.0)


def test_unpaired_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="unpaired"):
        PairedFigure.of([1.0, 2.0], [1.0])


def test_quartiles_stay_inside_the_data() -> None:
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)
    assert quartiles([7.0]) == (7.0, 7.0)


def test_bootstrap_interval_is_seeded_and_contains_the_median() -> None:
    values = [3.0, -8.0, 12.0, 5.0, 1.0, 30.0, -2.0, 7.0, 4.0]

    first = bootstrap_median_interval(values)
    again = bootstrap_median_interval(values)

    assert first == again  # same samples, same interval
    low, high = first
    assert min(values) <= low <= 4.0 <= high <= max(values)


def test_bootstrap_interval_narrows_with_more_pairs() -> None:
    few = [float(n % 7) - 3 for n in range(7)]
    many = few * 8

    few_low, few_high = bootstrap_median_interval(few)
    many_low, many_high = bootstrap_median_interval(many)

    assert many_high - many_low < few_high - few_low


def test_target_is_judged_on_the_median_when_the_interval_is_narrow() -> None:
    under = PairedFigure.from_differences([12.0, 14.0, 15.0, 13.0, 16.0, 14.0])
    over = PairedFigure.from_differences([24.0, 26.0, 25.0, 23.0, 27.0, 25.0])

    assert judge_at_most(under, 20.0) == (MET, "")
    assert judge_at_most(over, 20.0) == (MISS, "")


def test_target_is_skipped_when_the_interval_is_as_wide_as_the_target() -> None:
    noisy = PairedFigure.from_differences([-40.0, 35.0, 2.0, 60.0, -25.0, 10.0, 45.0])

    status, reason = judge_at_most(noisy, 20.0)

    assert status == SKIP
    assert "not narrower than the 20 target" in reason


def test_too_few_pairs_or_a_quick_run_are_never_judged() -> None:
    one = PairedFigure.from_differences([5.0])  # an interval of zero width, meaning nothing

    assert judge_at_most(one, 20.0)[0] == SKIP
    assert judge_at_most(one, 20.0, judged=False) == (SKIP, "not judged in a quick run")
    assert judge_positive(one)[0] == SKIP


def test_a_saving_pays_only_when_its_whole_interval_is_above_zero() -> None:
    pays = PairedFigure.from_differences([140.0, 150.0, 135.0, 160.0, 145.0])
    costs = PairedFigure.from_differences([-5.0, -8.0, -6.0, -7.0, -9.0])
    unclear = PairedFigure.from_differences([-20.0, 15.0, -3.0, 22.0, 4.0, -11.0])

    assert judge_positive(pays) == (MET, "")
    assert judge_positive(costs) == (MISS, "")
    assert judge_positive(unclear) == (SKIP, "95% CI includes 0")
