"""The pipeline benchmark's scaling phase: several measured jobs per worker count, the median one counts."""

from workers.bench.pipeline import combine_scale_rounds


def job(e2e_rows_per_s: float, steady_rows_per_s: float) -> dict:
    return {"end_to_end_s": 8192 / e2e_rows_per_s, "end_to_end_rows_per_s": e2e_rows_per_s,
            "steady": {"rows_per_s": steady_rows_per_s, "window_s": 8192 / steady_rows_per_s},
            "status": "completed", "shards_per_worker": [4] * 8, "load1_at_end": 1.0, "head_s": 0.5,
            "tail_s": 0.1, "worker_cpu_cores": 0.1}


def test_the_median_job_stands_for_a_worker_count_and_every_job_is_kept():
    jobs = [job(880, 990), job(930, 950), job(910, 1000)]
    combined = combine_scale_rounds(jobs, 8, 9.5, {}, 1024)
    assert combined["end_to_end_rows_per_s"] == 910
    assert combined["steady"]["rows_per_s"] == 990
    assert combined["rounds"] == jobs


def test_of_two_jobs_the_slower_one_counts():
    assert combine_scale_rounds([job(930, 990), job(880, 950)], 8, 9.5, {}, 1024)["end_to_end_rows_per_s"] == 880
