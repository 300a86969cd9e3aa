"""Each distinct input computed once, and values reused from earlier outputs (--no-dedup, --reuse),
in local mode: the counts every report gives (JobStatus, `producer status --json`, _SUCCESS.json),
the copies' values against what the model computes, and the refusals of sources that are not the
same computation or cannot be read. The jobs run in this process on the session's tiny fp32 engine
(qwen3batch.submit(local=True, engine=...)); the refusals, the status and the cancel go through the
CLI, as a user runs them."""

import json
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

import qwen3batch as q3b
from common.io.content import content_hash
from common.io.manifest import load_manifest
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import corpora
from harness.outputs import commit_records
from producer.progress import Reporter

pytestmark = pytest.mark.slow


# --- helpers -------------------------------------------------------------------------------------------
def distinct_texts() -> list[str]:
    """Real sentences, each once (STS12 repeats some of its sentences)."""
    return list(dict.fromkeys(corpora.sentences()[0]))


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def embed_rows(texts: list[str], first_id: int = 0) -> list[dict]:
    return [{"id": first_id + i, "text": t} for i, t in enumerate(texts)]


def run_local(corpus: Path, out: Path, model: Path, engine, shard_rows: int, **options):
    """A --local job in this process on an engine already loaded; returns (Job, its final JobStatus)."""
    job = q3b.submit(corpus, model=model, out=out, local=True, dtype="fp32", shard_rows=shard_rows, progress=False,
                     engine=engine, **options)
    return job, job.status()


def read_output(out: Path, value: str = "embedding") -> dict:
    """id -> (value bytes, value as float64 array, input_hash), every row of OUT/data; asserts no id twice."""
    table = ds.dataset(out / "data", format="parquet").to_table()
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} ids written more than once"
    column = table.column(value).combine_chunks()
    if value == "embedding":
        flat = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    else:
        flat = column.to_numpy(zero_copy_only=False).reshape(len(column), 1)
    hashes = table.column("input_hash").to_pylist()
    return {i: (row.tobytes(), row.astype(np.float64), h) for i, row, h in zip(ids, flat, hashes)}


def min_cosine(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    ids = sorted(a)
    va = np.stack([a[i][1] for i in ids])
    vb = np.stack([b[i][1] for i in ids])
    cos = np.sum(va * vb, axis=1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
    return float(cos.min())


def counts(report) -> tuple[int, int, int, int]:
    """(rows_out, rows_computed, rows_deduplicated, rows_reused) of a JobStatus, marker or status dict."""
    get = report.get if isinstance(report, dict) else lambda name: getattr(report, name)
    return get("rows_out"), get("rows_computed"), get("rows_deduplicated"), get("rows_reused")


def status_json(cluster, out: Path) -> dict:
    result = cluster.producer("status", out, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def success_marker(out: Path) -> dict:
    return json.loads((out / "_SUCCESS.json").read_text())


def beside(tmp_path: Path) -> dict:
    """The CLI's environment for a test that names a module fixture's output (a sibling of its
    tmp_path) with --reuse: the folder above both as QWEN3B_OUTPUT_ROOT."""
    return {"QWEN3B_OUTPUT_ROOT": str(tmp_path.parent)}


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed_engine(tiny_engine):
    return tiny_engine("embed", dtype="fp32")


@pytest.fixture(scope="module")
def cross_shard_job(tmp_path_factory, tiny_embed_model, embed_engine):
    """2,400 rows in shards of 500, a quarter of them repeating the text of a row in another shard
    (some texts three or four times): 1,800 distinct texts. Run once with dedup (the default)."""
    folder = tmp_path_factory.mktemp("cross-shard")
    rng = random.Random(2400)
    n, shard_rows = 2400, 500
    copy_rows = set(rng.sample(range(n), 600))
    originals = [i for i in range(n) if i not in copy_rows]
    texts = dict(zip(originals, distinct_texts()))
    assert len(texts) == 1800, "the corpus needs 1,800 distinct sentences"
    for i in sorted(copy_rows):  # the text of a row in another shard (before or after it)
        texts[i] = texts[rng.choice([j for j in originals if j // shard_rows != i // shard_rows])]
    rows = [{"id": i, "text": texts[i]} for i in range(n)]
    corpus = write_rows(folder / "corpus.jsonl", rows)
    job, status = run_local(corpus, folder / "out", tiny_embed_model, embed_engine, shard_rows)
    return {"corpus": corpus, "out": folder / "out", "rows": rows, "status": status, "shard_rows": shard_rows,
            "folder": folder}


@pytest.fixture(scope="module")
def small_source(tmp_path_factory, tiny_embed_model, embed_engine):
    """A finished source of 300 rows in three shards, computed with --dim 32: (its corpus, its output)."""
    folder = tmp_path_factory.mktemp("small-source")
    corpus = write_rows(folder / "c.jsonl", embed_rows(distinct_texts()[:300]))
    run_local(corpus, folder / "A", tiny_embed_model, embed_engine, 100, dim=32)
    return corpus, folder / "A"


# --- copies inside a job ---------------------------------------------------------------------------------
def test_rows_repeating_a_text_of_another_shard_are_copied_and_every_row_keeps_its_own_output_row(
        cross_shard_job, local_cluster):
    rows, out = cross_shard_job["rows"], cross_shard_job["out"]
    by_text = defaultdict(list)
    for r in rows:
        by_text[r["text"]].append(r["id"])
    shard_rows = cross_shard_job["shard_rows"]
    assert len(by_text) == 1800 and max(len(ids) for ids in by_text.values()) >= 3
    assert all(len({i // shard_rows for i in ids}) > 1 for ids in by_text.values() if len(ids) > 1)  # across shards
    # Then each distinct text was computed once, and the rest were copied
    status = cross_shard_job["status"]
    assert status.status == "completed"
    assert counts(status) == (2400, 1800, 600, 0)
    assert load_plan(OutputStore(out)).header.copies == 600
    # and `producer status --json` and _SUCCESS.json say the same
    assert counts(status_json(local_cluster, out)) == (2400, 1800, 600, 0)
    assert counts(success_marker(out)) == (2400, 1800, 600, 0)
    records = commit_records(out).values()
    assert sum(r.rows_deduplicated for r in records) == 600 and sum(r.rows_reused for r in records) == 0
    # and every row has its own output row, under its own id, with its own input's hash
    output = read_output(out)
    assert sorted(output) == list(range(2400))
    for r in rows:
        assert output[r["id"]][2] == content_hash((r["text"],)), r["id"]
    # and every copy holds its original's embedding, bit for bit, while different texts differ
    for text, ids in by_text.items():
        assert len({output[i][0] for i in ids}) == 1, f"rows {ids} of one text hold different embeddings"
    assert len({output[ids[0]][0] for ids in by_text.values()}) == 1800


def test_no_dedup_computes_every_row_and_its_vectors_agree_with_the_dedup_run(cross_shard_job, tiny_embed_model,
                                                                             embed_engine):
    # When the same corpus runs with --no-dedup (dedup=False)
    out = cross_shard_job["folder"] / "no-dedup"
    job, status = run_local(cross_shard_job["corpus"], out, tiny_embed_model, embed_engine,
                            cross_shard_job["shard_rows"], dedup=False)
    # Then every row is computed, none copied
    assert status.status == "completed"
    assert counts(status) == (2400, 2400, 0, 0)
    assert counts(success_marker(out)) == (2400, 2400, 0, 0)
    assert load_plan(OutputStore(out)).header.copies == 0
    # and its vectors are the dedup run's, row by row
    assert min_cosine(read_output(out), read_output(cross_shard_job["out"])) >= 0.99999


def test_rerank_copies_only_rows_of_the_same_query_and_document(tiny_rerank_model, tiny_engine, tmp_path):
    # Given pairs where some (query, document) pairs repeat, in this shard and in others, many
    # documents come with several queries and many queries with several documents, and two pairs
    # whose query and document join into the same characters split differently
    texts = distinct_texts()
    queries, documents = texts[:25], texts[100:220]
    rng = random.Random(11)
    pairs = [(queries[i % 25], documents[i % 120]) for i in range(300)]  # 300 distinct pairs
    pairs += [("alpha beta", "gamma delta"), ("alpha", " betagamma delta")]
    rows = [{"id": i, "query": q, "document": d} for i, (q, d) in enumerate(pairs)]
    for k in range(98):  # repeats of earlier pairs, at random places
        q, d = pairs[rng.randrange(len(pairs))]
        rows.insert(rng.randrange(len(rows) + 1), {"id": 1000 + k, "query": q, "document": d})
    corpus = write_rows(tmp_path / "pairs.jsonl", rows)
    distinct = {(r["query"], r["document"]) for r in rows}
    assert len(distinct) == 302 and len(rows) == 400
    assert len({d for q, d in distinct}) < len(distinct) and len({q for q, d in distinct}) < len(distinct)
    # When it is scored with dedup
    job = q3b.submit(corpus, model=tiny_rerank_model, out=tmp_path / "out", task="rerank", local=True, dtype="fp32",
                     shard_rows=100, progress=False, engine=tiny_engine("rerank", dtype="fp32"))
    status = job.status()
    # Then each distinct pair was scored once: the same document under another query is not a copy
    assert status.status == "completed"
    assert counts(status) == (400, 302, 98, 0)
    assert counts(success_marker(tmp_path / "out")) == (400, 302, 98, 0)
    output = read_output(tmp_path / "out", "score")
    assert sorted(output) == sorted(r["id"] for r in rows)
    by_pair = defaultdict(list)
    for r in rows:
        by_pair[(r["query"], r["document"])].append(r["id"])
        assert output[r["id"]][2] == content_hash((r["query"], r["document"]))
    for pair, ids in by_pair.items():
        assert len({output[i][0] for i in ids}) == 1, f"rows {ids} of one pair hold different scores"
    # and the two pairs that join into the same characters are different inputs
    split_a, split_b = by_pair[("alpha beta", "gamma delta")][0], by_pair[("alpha", " betagamma delta")][0]
    assert output[split_a][2] != output[split_b][2]
    assert len({output[ids[0]][2] for ids in by_pair.values()}) == 302


# --- --reuse -----------------------------------------------------------------------------------------------
def test_reuse_computes_only_what_the_old_output_never_held_and_the_new_output_stands_alone(
        tiny_embed_model, embed_engine, local_cluster, tmp_path):
    # Given job A over 600 distinct texts
    texts = distinct_texts()
    rng = random.Random(5)
    a_rows = embed_rows(texts[:600])
    run_local(write_rows(tmp_path / "a.jsonl", a_rows), tmp_path / "A", tiny_embed_model, embed_engine, 150)
    # and corpus B: A less 5% of its rows, 10% changed (12 of the new texts twice), 5% added (new
    # texts, texts of A's removed rows, texts of other rows of B)
    removed = set(rng.sample(range(600), 30))
    kept = [dict(r) for r in a_rows if r["id"] not in removed]
    new_texts = iter(texts[1000:1200])
    changed_pool = [next(new_texts) for _ in range(48)]
    changed = set(rng.sample(range(len(kept)), 60))
    for k, i in enumerate(sorted(changed)):
        kept[i]["text"] = changed_pool[k % 48]
    unchanged = [r for i, r in enumerate(kept) if i not in changed]
    added = [next(new_texts) for _ in range(15)] + [a_rows[i]["text"] for i in sorted(removed)[:9]] + \
            [rng.choice(unchanged)["text"] for _ in range(6)]
    b_rows = kept + embed_rows(added, first_id=5000)
    rng.shuffle(b_rows)
    b_corpus = write_rows(tmp_path / "b.jsonl", b_rows)
    a_texts = {r["text"] for r in a_rows}
    held = [r for r in b_rows if r["text"] in a_texts]
    never_held = {r["text"] for r in b_rows} - a_texts
    assert len(b_rows) == 600 and len(never_held) == 63 and len(held) == 525
    # When B runs with --reuse A
    job, status = run_local(b_corpus, tmp_path / "B", tiny_embed_model, embed_engine, 150, reuse=[tmp_path / "A"])
    # Then it computed exactly the texts A never held, copied the rest, and says so everywhere
    expected = (len(b_rows), len(never_held), len(b_rows) - len(held) - len(never_held), len(held))
    assert status.status == "completed"
    assert counts(status) == expected
    assert status.rows_reused + status.rows_deduplicated + status.rows_computed == status.rows_out
    assert counts(success_marker(tmp_path / "B")) == expected
    assert load_plan(OutputStore(tmp_path / "B")).header.reusable == len(held)
    # and its vectors are those of a fresh full run of B (and A's own bits, where copied from A)
    _, fresh_status = run_local(b_corpus, tmp_path / "fresh", tiny_embed_model, embed_engine, 150, dedup=False)
    assert fresh_status.rows_computed == len(b_rows)
    b_out, fresh, a_out = read_output(tmp_path / "B"), read_output(tmp_path / "fresh"), read_output(tmp_path / "A")
    assert min_cosine(b_out, fresh) >= 0.99999
    a_by_text = {r["text"]: a_out[r["id"]][0] for r in a_rows}
    assert all(b_out[r["id"]][0] == a_by_text[r["text"]] for r in held)
    # When A's output is deleted
    shutil.rmtree(tmp_path / "A")
    # Then B still reads completely, through every reader, and its status is unchanged
    again = read_output(tmp_path / "B")
    assert sorted(again) == sorted(r["id"] for r in b_rows)
    assert all(again[i][0] == b_out[i][0] for i in again)
    assert q3b.open_job(tmp_path / "B").read(columns=["id", "embedding"]).column("embedding").null_count == 0
    assert counts(status_json(local_cluster, tmp_path / "B")) == expected


def test_the_same_reuse_job_submitted_again_after_its_source_is_deleted_resumes_it(tiny_embed_model, embed_engine,
                                                                                   local_cluster, tmp_path):
    texts = distinct_texts()
    run_local(write_rows(tmp_path / "a.jsonl", embed_rows(texts[:200])), tmp_path / "A", tiny_embed_model,
              embed_engine, 100)
    b_corpus = write_rows(tmp_path / "b.jsonl", embed_rows(texts[100:300]))
    args = ("submit", b_corpus, "--model", tiny_embed_model, "--out", tmp_path / "B", "--local", "--dtype", "fp32",
            "--shard-rows", 100, "--reuse", tmp_path / "A")
    run_local(b_corpus, tmp_path / "B", tiny_embed_model, embed_engine, 100, reuse=[tmp_path / "A"])
    shutil.rmtree(tmp_path / "A")
    again = local_cluster.producer(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming job" in again.stderr


@pytest.mark.parametrize("option, field, values", [(("--dtype", "fp32", "--dim", "48"), "dim", ("32", "48")),
                                                    (("--dtype", "bf16", "--dim", "32"), "dtype", ("fp32", "bf16"))])
def test_a_reuse_source_of_another_computation_is_refused_naming_what_differs(
        option, field, values, small_source, tiny_embed_model, local_cluster, tmp_path):
    # Given a source computed with --dim 32 in fp32
    corpus, source = small_source
    # When a job of another dimension (or dtype) names it
    out = tmp_path / "new"
    result = local_cluster.producer("submit", corpus, "--model", tiny_embed_model, "--out", out, "--local",
                                    "--shard-rows", 100, *option, "--reuse", source, env=beside(tmp_path))
    # Then it is refused with exit 2, naming the field and both values, before anything is written
    assert result.returncode == 2, result.stderr
    assert f"--reuse {source}" in result.stderr
    line = next(line for line in result.stderr.splitlines() if "--reuse" in line)
    assert f"{field} " in line and all(v in line for v in values), line
    assert "Traceback" not in result.stderr
    assert not files_under(out), files_under(out)


@pytest.mark.parametrize("damage", ["deleted", "garbage", "same-size garbage"])
def test_a_reuse_source_whose_data_file_is_gone_or_garbage_is_refused_naming_the_file(damage, small_source,
                                                                                      tiny_embed_model, local_cluster,
                                                                                      tmp_path):
    # Given a copy of a finished source whose second committed data file was deleted or overwritten
    corpus, original = small_source
    source = tmp_path / "source"
    shutil.copytree(original, source)
    record = next(r for r in commit_records(source).values() if r.shard_id.endswith("000000000100"))
    data_file = source / record.data_file
    rng = np.random.default_rng(1)
    if damage == "deleted":
        data_file.unlink()
    elif damage == "garbage":
        data_file.write_bytes(rng.bytes(5000))
    else:
        data_file.write_bytes(rng.bytes(data_file.stat().st_size))
    # When a job names it with --reuse
    out = tmp_path / "new"
    result = local_cluster.producer("submit", corpus, "--model", tiny_embed_model, "--out", out, "--local",
                                    "--shard-rows", 100, "--dtype", "fp32", "--dim", 32, "--reuse", source,
                                    env=beside(tmp_path))
    # Then it is refused with exit 2, naming the file, and nothing is written
    assert result.returncode == 2, result.stderr
    assert str(data_file) in result.stderr and "Traceback" not in result.stderr
    assert ("is gone" if damage == "deleted" else "is not a readable data file") in result.stderr
    assert not files_under(out), files_under(out)


def test_a_reuse_path_that_holds_no_job_is_refused(small_source, tiny_embed_model, local_cluster, tmp_path):
    corpus, source = small_source
    for path in (corpus.parent, tmp_path / "nothing-here", source / "data"):
        out = tmp_path / "new"
        result = local_cluster.producer("submit", corpus, "--model", tiny_embed_model, "--out", out, "--local",
                                        "--dtype", "fp32", "--dim", 32, "--reuse", path, env=beside(tmp_path))
        assert result.returncode == 2, result.stderr
        assert f"--reuse {path}: not a job's output" in result.stderr and "Traceback" not in result.stderr
        assert not files_under(out), files_under(out)


def test_a_reuse_path_that_is_a_file_is_refused_like_any_other_non_job(small_source, tiny_embed_model, local_cluster,
                                                                       tmp_path):
    corpus, source = small_source
    result = local_cluster.producer("submit", corpus, "--model", tiny_embed_model, "--out",
                                    tmp_path / "new", "--local", "--dtype", "fp32", "--dim", 32, "--reuse", corpus,
                                    env=beside(tmp_path))
    assert result.returncode == 2, result.stderr
    assert f"--reuse {corpus}: not a job's output" in result.stderr


class CancelAfter(Reporter):
    """A follower that cancels the job (`producer cancel OUT`) once `rows` rows are committed."""

    def __init__(self, cluster, out: Path, rows: int):
        super().__init__()
        self.cluster, self.out, self.rows, self.cancelled = cluster, out, rows, False

    def update(self, snap) -> None:
        super().update(snap)
        if not self.cancelled and snap.rows_committed >= self.rows:
            result = self.cluster.producer("cancel", self.out)
            assert result.returncode == 0, result.stderr
            self.cancelled = True


def test_an_unfinished_reuse_source_gives_only_its_committed_shards_rows(tiny_embed_model, embed_engine,
                                                                         local_cluster, tmp_path):
    # Given job A over 500 distinct texts in five shards, cancelled once two are committed
    rows = embed_rows(distinct_texts()[:500])
    corpus = write_rows(tmp_path / "c.jsonl", rows)
    a = q3b.submit(corpus, model=tiny_embed_model, out=tmp_path / "A", local=True, dtype="fp32", shard_rows=100,
                   progress=CancelAfter(local_cluster, tmp_path / "A", 200), engine=embed_engine)
    assert a.status().status == "cancelled" and not (tmp_path / "A" / "_SUCCESS.json").exists()
    manifest = load_manifest(OutputStore(tmp_path / "A"), 5)
    committed = [s for s in a.plan.iter_shards() if manifest.committed[s.ordinal]]
    assert len(committed) == 2
    held_ids = {i for s in committed for i in range(s.row_start, s.row_end)}
    # When the same corpus runs with --reuse A
    job, status = run_local(corpus, tmp_path / "B", tiny_embed_model, embed_engine, 100, reuse=[tmp_path / "A"])
    # Then the rows of A's committed shards are copied from A, and only those
    assert status.status == "completed"
    assert counts(status) == (500, 300, 0, 200)
    b_out, a_out = read_output(tmp_path / "B"), read_output(tmp_path / "A")
    assert set(a_out) == held_ids
    assert all(b_out[i][0] == a_out[i][0] for i in held_ids)
    reused_by_shard = Counter({r.shard_id: r.rows_reused for r in commit_records(tmp_path / "B").values()})
    assert sorted(reused_by_shard.values()) == [0, 0, 0, 100, 100]


def test_a_reuse_source_outside_the_output_root_is_refused_as_a_reuse_source(small_source, tiny_embed_model,
                                                                            local_cluster, tmp_path):
    corpus, source = small_source
    result = local_cluster.producer("submit", corpus, "--model", tiny_embed_model, "--out", tmp_path / "new",
                                    "--local", "--dtype", "fp32", "--dim", 32, "--reuse", source)
    assert result.returncode == 2, result.stderr
    assert f"--reuse {source}" in result.stderr, result.stderr
