"""The benchmark's figures: percentiles, latency summaries, throughput, requests in flight."""

import numpy as np
import pytest

from workers.bench.errors import BenchError
from workers.bench.stats import max_in_flight, percentile, summarize, throughput


@pytest.mark.parametrize("samples", [
    [15.0, 20.0, 35.0, 40.0, 50.0],
    [7.0],
    [3.0, 1.0, 2.0],                      # unsorted input
    [0.5, 0.5, 0.5, 9.0],                 # ties and one outlier
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1000.0],
])
@pytest.mark.parametrize("p", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentiles_match_numpys_default_method(samples, p):
    assert percentile(samples, p) == pytest.approx(np.percentile(samples, p), rel=1e-12)


def test_percentiles_interpolate_between_closest_ranks():
    # Given five samples, the 40th percentile sits at rank 0.4 * 4 = 1.6: 20 + 0.6 * (35 - 20)
    assert percentile([15, 20, 35, 40, 50], 40) == pytest.approx(29.0)
    assert percentile([15, 20, 35, 40, 50], 50) == 35


def test_a_latency_summary_is_in_milliseconds_with_every_requested_percentile():
    # Given four requests of 4, 1, 3 and 2 ms (in seconds)
    summary = summarize([0.004, 0.001, 0.003, 0.002], [50, 90, 99])
    # Then the figures are, by hand: sorted 1, 2, 3, 4; p90 at rank 2.7, p99 at rank 2.97
    assert summary == pytest.approx({"avg": 2.5, "min": 1.0, "max": 4.0, "p50": 2.5, "p90": 3.7, "p99": 3.97})


def test_a_fractional_percentile_keeps_its_digits_in_its_name():
    assert set(summarize([0.001, 0.002], [99.9])) == {"avg", "min", "max", "p99.9"}


def test_percentiles_of_nothing_or_out_of_range_are_refused():
    with pytest.raises(BenchError):
        summarize([], [50])
    with pytest.raises(BenchError):
        percentile([1.0], 101)


def test_throughput_counts_every_token_of_every_request():
    # Given 10 requests of 4 x 128 tokens in 2 seconds
    figures = throughput(10, 4, 128, 2.0)
    assert figures == {"requests_per_s": 5.0, "sequences_per_s": 20.0, "tokens_per_s": 2560.0}


def test_requests_in_flight_are_the_most_intervals_open_at_once():
    # Given requests (submitted, received): three overlap around t = 2.5
    intervals = [(0, 3), (1, 2), (2, 4), (2.5, 5), (6, 7)]
    assert max_in_flight(intervals) == 3


def test_a_request_submitted_as_another_is_received_does_not_overlap_it():
    # The driver submits the next request only after it received one: one at a time
    assert max_in_flight([(0, 1), (1, 2), (2, 3)]) == 1
