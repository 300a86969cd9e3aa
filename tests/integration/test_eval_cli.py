"""`workers eval` end to end on the tiny random-weight models and real sentences (STS12 where the
file lies beside the checkout, standard-library docstring pairs elsewhere: harness/corpora.py).

The figures are recomputed here the obvious way (engine outputs, then scipy / scikit-learn), so
the tests check the whole path: reading, instruction formatting, chunking, order, metrics, record.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, ndcg_score
from typer.testing import CliRunner

from harness.corpora import sts_rows
from common.defaults import DEFAULT_RERANK_INSTRUCTION, DEFAULT_SYMMETRIC_INSTRUCTION
from common.templates import format_query
from workers.engines.base import EngineSpec
from workers.eval.agreement import agree_on_sts
from workers.eval.inputs import read_reranking, read_sts
from workers.eval.reranking import evaluate_reranking
from workers.eval.running import no_progress

REPO = Path(__file__).resolve().parents[2]
SEQLENS = (64, 128)


@pytest.fixture(scope="module")
def sts_slice(tmp_path_factory) -> Path:
    """20 rows in the STS eval format in a temporary file (STS12's first and last 10 where it exists)."""
    rows, _ = sts_rows(20)
    path = tmp_path_factory.mktemp("eval") / "sts-slice.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_sts_command_saves_the_figures_with_their_settings(sts_slice, tiny_embed_model, tiny_engine, tmp_path):
    out = tmp_path / "sts.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "workers", "eval", "sts", str(sts_slice), "--model",
                          str(tiny_embed_model), "--dtype", "fp32", "--seqlens", "64,128", "--chunk-rows", "8",
                          "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "spearman_x100" in run.stdout and "RANDOM WEIGHTS" in run.stdout
    record = json.loads(out.read_text())

    settings = record["settings"]
    assert Path(settings["engine"].pop("model")).resolve() == tiny_embed_model.resolve()
    assert settings["engine"] == {"backend": "torch", "dtype": "fp32", "device": "cpu", "seqlens": [64, 128],
                                  "hidden_size": 64, "random_weights": True}
    assert settings["instruction"] == DEFAULT_SYMMETRIC_INSTRUCTION
    assert settings["dataset"]["sha256"] == hashlib.sha256(sts_slice.read_bytes()).hexdigest()
    assert settings["dataset"]["rows_read"] == 20
    assert {"torch", "transformers", "numpy", "python"} <= set(record["versions"])
    assert record["timestamp_utc"]

    # The same figures, the obvious way: one engine call, cosines, scipy.
    pairs = read_sts(sts_slice)
    engine = tiny_engine("embed", dtype="fp32", seqlens=SEQLENS)
    left = engine.embed([format_query(p.sentence1, DEFAULT_SYMMETRIC_INSTRUCTION) for p in pairs]).vectors
    right = engine.embed([format_query(p.sentence2, DEFAULT_SYMMETRIC_INSTRUCTION) for p in pairs]).vectors
    cosines = (left.astype(np.float64) * right).sum(1)
    gold = [p.score for p in pairs]
    results = record["results"]
    assert (results["pairs"], results["pairs_scored"], results["pairs_failed"]) == (20, 20, 0)
    assert results["spearman_x100"] == pytest.approx(100 * stats.spearmanr(cosines, gold).statistic, abs=1e-3)
    assert results["pearson_x100"] == pytest.approx(100 * stats.pearsonr(cosines, gold).statistic, abs=1e-3)


def test_eval_sts_command_stops_at_a_bad_line_with_its_number_and_writes_nothing(tmp_path):
    from workers.cli import app

    data = tmp_path / ("a-folder-name-long-enough-that-the-message-runs-past-eighty-columns" * 2) / "bad.jsonl"
    data.parent.mkdir()
    data.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n\n{"sentence1": "a", "sentence2": "b", '
                    '"score": "high"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "sts", str(data), "--model", "/no/model/needed/yet",
                                      "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert f"{data} line 3: non-numeric score 'high'" in result.output  # on one line, the path whole
    assert "Traceback" not in result.output and not (tmp_path / "r.json").exists()


def test_fp32_and_bf16_embeddings_of_sts_sentences_agree(sts_slice, tiny_engine):
    specs = [EngineSpec(model="tiny", dtype=dtype, seqlens=SEQLENS) for dtype in ("fp32", "bf16")]
    engines, results = agree_on_sts(specs, read_sts(sts_slice), DEFAULT_SYMMETRIC_INSTRUCTION,
                                    make_engine=lambda spec: tiny_engine("embed", dtype=spec.dtype, seqlens=SEQLENS),
                                    progress=no_progress)
    assert [e["dtype"] for e in engines] == ["fp32", "bf16"]
    assert results["texts_compared"] == results["texts"] >= 30  # 40 sentences, a few repeated
    assert results["cosine_worst"] > 0.99
    assert results["cosine_worst"] <= results["cosine_mean"] < 1.0  # bf16 really ran: not bit-identical
    assert abs(results["sts_spearman_diff_x100"]) < 5


def test_reranking_figures_equal_sklearns_on_the_engines_own_scores(tiny_engine, tmp_path):
    rows, _ = sts_rows(40)
    data = tmp_path / "msmarco-like.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i in range(6):  # query = sentence1, positive = its own sentence2, negatives = other rows'
            f.write(json.dumps({"query_id": i, "query": rows[i]["sentence1"],
                                "positive_passages": [{"text": rows[i]["sentence2"]}],
                                "negative_passages": [{"text": rows[(i + j) % 40]["sentence2"]} for j in range(7, 19)]})
                    + "\n")
    queries = read_reranking(data)
    engine = tiny_engine("rerank", dtype="fp32", seqlens=(128, 256))
    results = evaluate_reranking(engine, queries, DEFAULT_RERANK_INSTRUCTION, chunk_rows=16, progress=no_progress)

    ndcg, ap = [], []
    for q in queries:
        passages = list(q.positives + q.negatives)
        scores = engine.rerank([q.query] * len(passages), passages).scores
        labels = [True] * len(q.positives) + [False] * len(q.negatives)
        ndcg.append(ndcg_score([labels], [scores], k=10))
        ap.append(average_precision_score(labels, scores))
    assert results["queries_scored"] == 6 and results["queries_with_ties"] == 0
    assert results["ndcg_at_10_x100"] == pytest.approx(100 * np.mean(ndcg), abs=1e-3)
    assert results["map_x100"] == pytest.approx(100 * np.mean(ap), abs=1e-3)
