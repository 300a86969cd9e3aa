"""A shard runs as a pipeline (workers/pipeline.py): the next chunk is read and tokenised, and the
previous one written, while the engine computes the current one (issue 15).

Overlap is proven by ordering, not by timing: the engine's compute of chunk i waits for the
tokenising of chunk i+1 to have started, and the writing of chunk i waits for the compute of
chunk i+1 to have started. A serial pipeline could never satisfy either and would time out."""

import threading

import pyarrow.parquet as pq
import pytest

from common import defaults
from common.io import output
from producer import api
from workers.engines.base import EngineSpec
from workers.engines.simulated import SimulatedEngine

CHUNK_ROWS = 8
WAIT_S = 20


class Recorder:
    """Events by chunk number, and the thread each step ran on."""

    def __init__(self, chunks: int):
        self.chunks = chunks
        self.tokenising = [threading.Event() for _ in range(64)]  # more than any job here has chunks
        self.computing = [threading.Event() for _ in range(64)]
        self.threads: dict[str, set] = {"tokenise": set(), "compute": set(), "write": set()}
        self.counts = {"tokenise": 0, "compute": 0, "write": 0}
        self.timeouts: list[str] = []

    def step(self, kind: str) -> int:
        self.threads[kind].add(threading.current_thread().name)
        self.counts[kind] += 1
        return self.counts[kind] - 1

    def wait_for(self, events, i: int, what: str) -> None:
        if i + 1 < self.chunks and not events[i + 1].wait(WAIT_S):
            self.timeouts.append(what)


class OverlapProbe(SimulatedEngine):
    recorder: Recorder

    def tokenize_embed(self, texts):
        self.recorder.tokenising[self.recorder.step("tokenise")].set()
        return super().tokenize_embed(texts)

    def embed_tokenized(self, rows, dim=None, progress=None):
        i = self.recorder.step("compute")
        self.recorder.computing[i].set()
        self.recorder.wait_for(self.recorder.tokenising, i, f"compute {i} finished before tokenising {i + 1} began")
        return super().embed_tokenized(rows, dim, progress)


def write_corpus(path, rows: int) -> list[int]:
    path.write_text("".join(f'{{"id": {i}, "text": "sentence number {i} of the corpus"}}\n' for i in range(rows)))
    return list(range(rows))


@pytest.fixture
def probe(monkeypatch, tiny_embed_model):
    monkeypatch.setattr(defaults, "ENGINE_CHUNK_ROWS", CHUNK_ROWS)
    monkeypatch.setenv("QWEN3B_SIM_BATCH_S", "0")
    engine = OverlapProbe(EngineSpec(model=str(tiny_embed_model), backend="simulated", dtype="fp32"))
    return engine


def run_job(tmp_path, model, engine, rows: int):
    ids = write_corpus(tmp_path / "c.jsonl", rows)
    job = api.submit(tmp_path / "c.jsonl", model=model, out=tmp_path / "out", local=True, backend="simulated",
                     dtype="fp32", shard_rows=rows, progress=False, engine=engine)
    return ids, job


def test_reading_computing_and_writing_of_neighbouring_chunks_overlap(probe, monkeypatch, tmp_path, tiny_embed_model):
    # Given a one-shard job of 5 chunks, whose writes wait for the next chunk's compute to begin
    chunks = 5
    probe.recorder = recorder = Recorder(chunks)
    write = output.ParquetChunkWriter.write

    def slow_write(self, rows, *rest):
        i = recorder.step("write")
        recorder.wait_for(recorder.computing, i, f"write {i} finished before compute {i + 1} began")
        return write(self, rows, *rest)

    monkeypatch.setattr(output.ParquetChunkWriter, "write", slow_write)
    # When it runs
    ids, job = run_job(tmp_path, tiny_embed_model, probe, chunks * CHUNK_ROWS)
    # Then no step waited in vain, each side ran on its own thread, and the output is whole and in order
    assert recorder.timeouts == []
    assert recorder.counts == {"tokenise": chunks, "compute": chunks, "write": chunks}
    assert recorder.threads["compute"] == {threading.main_thread().name}
    assert all(name.startswith("q3b-read") for name in recorder.threads["tokenise"])
    assert all(name.startswith("q3b-write") for name in recorder.threads["write"])
    data = pq.ParquetFile(next((tmp_path / "out" / "data").glob("*.parquet")))
    assert data.read().column("id").to_pylist() == ids
    assert data.num_row_groups == chunks  # one row group per chunk, written as it came
    assert job.status().status == "completed"


ATTEMPTS = defaults.DEFAULT_MAX_ATTEMPTS  # --local retries a failed shard like a worker does


def assert_quarantined_without_a_trace(job, tmp_path, reason: str) -> None:
    status = job.status()
    assert status.shards_committed == 0 and reason in status.quarantined["00000000-000000000000"]
    leftovers = [p for p in (tmp_path / "out").rglob("*.parquet") if "_plan" not in p.parts]
    assert not leftovers  # no attempt left behind, nothing published


def test_a_failed_write_stops_the_shard_and_leaves_no_attempt(probe, monkeypatch, tmp_path, tiny_embed_model):
    probe.recorder = Recorder(0)  # no waiting: only the failure matters here

    def failing_write(self, rows, *rest):
        raise OSError("disk full")

    monkeypatch.setattr(output.ParquetChunkWriter, "write", failing_write)
    _, job = run_job(tmp_path, tiny_embed_model, probe, 6 * CHUNK_ROWS)
    assert_quarantined_without_a_trace(job, tmp_path, "OSError: disk full")
    # each attempt stopped reading at once: at most one chunk beyond the last one computed
    assert probe.recorder.counts["tokenise"] <= probe.recorder.counts["compute"] + ATTEMPTS


def test_a_failed_compute_stops_the_reader_and_leaves_no_attempt(probe, tmp_path, tiny_embed_model):
    probe.recorder = Recorder(0)

    def failing(rows, dim=None, progress=None):
        if probe.recorder.step("compute") % 2 == 1:  # the second chunk of every attempt
            raise RuntimeError("device lost")
        return SimulatedEngine.embed_tokenized(probe, rows, dim, progress)

    probe.embed_tokenized = failing
    _, job = run_job(tmp_path, tiny_embed_model, probe, 6 * CHUNK_ROWS)
    assert_quarantined_without_a_trace(job, tmp_path, "RuntimeError: device lost")
    assert probe.recorder.counts["compute"] == 2 * ATTEMPTS
    assert probe.recorder.counts["tokenise"] <= 3 * ATTEMPTS
