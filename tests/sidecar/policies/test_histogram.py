"""The latency histogram: buckets, percentiles, merging, and its JSON form."""

from __future__ import annotations

import random
from bisect import bisect_left

import pytest

from sidecar.policies.histogram import BOUNDS, STEPS_PER_DOUBLING, Histogram, _bucket


def test_bounds_grow_by_a_fixed_ratio():
    ratios = {round(b / a, 3) for a, b in zip(BOUNDS, BOUNDS[1:], strict=False)}
    assert ratios == {round(2 ** (1 / STEPS_PER_DOUBLING), 3)}
    assert BOUNDS[0] == 0.00005 and BOUNDS[-1] > 100


def test_empty_histogram_reads_zero():
    h = Histogram()
    assert (h.count, h.sum, h.percentile(0.5)) == (0, 0.0, 0.0)
    assert h.to_dict() == {"counts": [], "count": 0, "sum": 0.0}


@pytest.mark.parametrize("value", [0.0, 0.00005, 0.0003, 0.05, 1.0, 99.0])
def test_one_value_reads_back_within_its_bucket(value):
    h = Histogram()
    h.observe(value)
    index = BOUNDS.index(next(b for b in BOUNDS if b >= value))
    low = BOUNDS[index - 1] if index else 0.0
    for q in (0.0, 0.5, 1.0):
        assert low <= h.percentile(q) <= BOUNDS[index]


def test_a_value_on_a_bound_counts_in_that_bucket():
    h = Histogram()
    h.observe(BOUNDS[3])
    assert h.counts[3] == 1


def test_values_past_the_last_bound_overflow():
    h = Histogram()
    h.observe(1000.0)
    assert h.counts[-1] == 1 and h.percentile(0.99) == BOUNDS[-1]


def test_percentiles_are_within_a_bucket_of_the_exact_ones():
    rng = random.Random(5)
    values = [rng.lognormvariate(-4, 1) for _ in range(5000)]
    h = Histogram()
    for v in values:
        h.observe(v)
    values.sort()
    width = 2 ** (1 / STEPS_PER_DOUBLING)
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert exact / width <= h.percentile(q) <= exact * width
    assert h.count == 5000 and h.sum == pytest.approx(sum(values))


def test_a_tight_cluster_reads_within_two_percent():
    """Calls that all took 52 to 53 ms (a service's fixed latency): p50 read 56 ms with buckets of 19 %."""
    rng = random.Random(3)
    values = sorted(rng.uniform(0.052, 0.053) for _ in range(4000))
    h = Histogram()
    for v in values:
        h.observe(v)
    assert 2 ** (1 / STEPS_PER_DOUBLING) < 1.023
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert h.percentile(q) == pytest.approx(exact, rel=0.023)


def test_percentiles_do_not_decrease():
    h = Histogram()
    for ms in (1, 1, 2, 5, 8, 13, 40, 300):
        h.observe(ms / 1000)
    readings = [h.percentile(q / 100) for q in range(101)]
    assert readings == sorted(readings)


def test_percentile_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        Histogram().percentile(1.5)


def test_merged_histograms_equal_one_fed_all_values():
    rng = random.Random(7)
    parts, whole = [Histogram() for _ in range(3)], Histogram()
    for _ in range(999):
        value = rng.expovariate(20)
        rng.choice(parts).observe(value)
        whole.observe(value)
    merged = Histogram()
    for part in parts:
        merged.merge(Histogram.from_dict(part.to_dict()))
    assert merged.counts == whole.counts and merged.count == whole.count
    assert merged.sum == pytest.approx(whole.sum)
    assert merged.percentile(0.99) == whole.percentile(0.99)


def test_json_form_trims_trailing_zeros_and_round_trips():
    h = Histogram()
    h.observe(0.0001)  # twice the first bound: one doubling up
    h.observe(0.0001)
    data = h.to_dict()
    assert data == {"counts": [0] * STEPS_PER_DOUBLING + [2], "count": 2, "sum": pytest.approx(0.0002)}
    back = Histogram.from_dict(data)
    assert back.counts == h.counts and back.count == 2


@pytest.mark.parametrize("counts", [[-1], ["3"], [0] * (len(BOUNDS) + 2)])
def test_from_dict_refuses_counts_that_do_not_fit(counts):
    with pytest.raises(ValueError):
        Histogram.from_dict({"counts": counts, "sum": 0})


def test_cumulative_buckets_for_prometheus():
    h = Histogram()
    for value in (0.0001, 0.001, 0.01, 1000.0):
        h.observe(value)
    every = h.cumulative(STEPS_PER_DOUBLING)
    assert every[-1] == (float("inf"), 4)
    assert [bound for bound, _ in every[:-1]] == list(BOUNDS[::STEPS_PER_DOUBLING])
    assert [n for _, n in every] == sorted(n for _, n in every)
    assert dict(every)[0.0001] == 1 and every[-2][1] == 3


def test_a_value_lands_in_the_bucket_bisect_finds():
    rng = random.Random(7)
    values = [rng.uniform(0, 0.2) for _ in range(20_000)] + [rng.lognormvariate(-3, 3) for _ in range(20_000)]
    values += [0.0, -1.0, float("inf"), float("nan"), 5, *BOUNDS, *(b * (1 + 1e-12) for b in BOUNDS)]
    for value in values:
        assert _bucket(value) == bisect_left(BOUNDS, value), value
    with pytest.raises(TypeError):
        Histogram().observe("0.1")
