"""The request driver, instance placement and the benchmark's options, without processes."""

import random

import pytest

from workers.bench.driver import drive, summarize_records
from workers.bench.errors import BenchError
from workers.bench.instances import plan_placements
from workers.bench.options import BenchOptions, parse_devices, parse_percentiles


class FakeInstances:
    """Instances that finish outstanding requests in a random order, counting how many are
    outstanding (submitted, not yet received) at every moment."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.outstanding: list[int] = []
        self.most_outstanding = 0
        self.submitted: list[int] = []
        self.time = 0.0

    def clock(self) -> float:
        self.time += 1.0
        return self.time

    def submit(self, request_id: int) -> None:
        self.submitted.append(request_id)
        self.outstanding.append(request_id)
        self.most_outstanding = max(self.most_outstanding, len(self.outstanding))

    def receive(self) -> tuple[int, int, float]:
        request_id = self.outstanding.pop(self.rng.randrange(len(self.outstanding)))
        return request_id % 2, request_id, 0.5


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_the_driver_keeps_exactly_the_requested_number_of_requests_in_flight(limit):
    # Given instances that finish requests in any order
    instances = FakeInstances(seed=limit)
    # When 40 requests are driven with a limit
    records = drive(40, limit, instances.submit, instances.receive, clock=instances.clock)
    # Then no more than `limit` were ever outstanding, and the limit was reached
    assert instances.most_outstanding == limit
    # And every request was submitted once, in order, and came back once
    assert instances.submitted == list(range(40))
    assert [r.request_id for r in records] == list(range(40))
    # And the in-flight count measured from the records' own timestamps agrees
    assert summarize_records(records, "throughput", 1, 16, limit, (50,))["max_in_flight"] == limit


def test_a_latency_is_measured_from_submission_to_receipt_so_waiting_counts():
    instances = FakeInstances()
    records = drive(10, 3, instances.submit, instances.receive, clock=instances.clock)
    assert all(r.received_s > r.submitted_s for r in records)
    # The instances' own compute time (0.5 "s" here) is reported apart from the latency
    assert all(r.compute_s == 0.5 and r.latency_s >= 1 for r in records)


def test_the_driver_submits_nothing_beyond_the_requested_count():
    instances = FakeInstances()
    drive(3, 10, instances.submit, instances.receive, clock=instances.clock)
    assert instances.submitted == [0, 1, 2]


def test_cpu_instances_get_disjoint_groups_of_cores():
    placements = plan_placements(("cpu",), 2, cores=[0, 1, 2, 3, 4], environ={})
    assert [p.cpu_cores for p in placements] == [(0, 1, 2), (3, 4)]
    assert all(p.engine_device == "cpu" for p in placements)


def test_more_cpu_instances_than_cores_share_cores_one_each():
    placements = plan_placements(("cpu",), 3, cores=[0, 1], environ={})
    assert [p.cpu_cores for p in placements] == [(0,), (1,), (0,)]


def test_each_cuda_instance_sees_only_its_own_card_as_cuda_0():
    placements = plan_placements(("cuda:0", "cuda:1"), 2, cores=[0], environ={})
    assert [(p.device, p.cuda_visible_devices, p.engine_device) for p in placements] == [
        ("cuda:0", "0", "cuda:0"), ("cuda:0", "0", "cuda:0"), ("cuda:1", "1", "cuda:0"), ("cuda:1", "1", "cuda:0")]
    assert [p.instance for p in placements] == [0, 1, 2, 3]


def test_cuda_ids_index_an_existing_cuda_visible_devices_list():
    placements = plan_placements(("cuda:1",), 1, cores=[0], environ={"CUDA_VISIBLE_DEVICES": "4,6"})
    assert placements[0].cuda_visible_devices == "6"
    with pytest.raises(BenchError, match="holds only 2 devices"):
        plan_placements(("cuda:2",), 1, cores=[0], environ={"CUDA_VISIBLE_DEVICES": "4,6"})


def test_throughput_mode_keeps_two_requests_per_instance_in_flight_unless_told():
    options = BenchOptions(model="m", devices=("cuda:0", "cuda:1"), instances_per_device=2)
    assert options.in_flight_limit == 8
    assert BenchOptions(model="m", queue_depth=3).in_flight_limit == 3


def test_a_sweep_runs_every_batch_size_at_every_length():
    options = BenchOptions(model="m", batch_sizes=(1, 4), seqlens=(128, 512))
    assert options.configs() == [(1, 128), (4, 128), (1, 512), (4, 512)]


def test_bad_options_are_refused_with_what_to_change():
    with pytest.raises(BenchError, match="0 to 100"):
        parse_percentiles("50,101")
    with pytest.raises(BenchError, match="--instances"):
        parse_devices("cuda:0,cuda:0")
    with pytest.raises(BenchError, match=">= 8 tokens"):
        BenchOptions(model="m", seqlens=(4,))
    assert parse_percentiles("99, 50,90") == (50.0, 90.0, 99.0)
