"""The evaluation record: strict JSON (undefined figures as null) and a table that flags random weights."""

import io
import json

from rich.console import Console

from workers.eval.report import build_report, print_report, save_report

ENGINE = {"model": "/models/m", "backend": "torch", "dtype": "bf16", "device": "cpu", "seqlens": [64],
          "hidden_size": 64, "random_weights": True}
DATASET = {"path": "/data/sts.jsonl", "sha256": "ab" * 32, "rows_read": 3, "row_cap": None}


def test_undefined_figures_are_saved_as_null_and_printed_as_undefined(tmp_path):
    report = build_report("sts", {"engine": ENGINE, "instruction": None, "dataset": DATASET},
                          {"spearman_x100": float("nan"), "pairs": 3, "first_error": None})
    path = save_report(report, tmp_path / "deep" / "r.json")
    assert "NaN" not in path.read_text()  # json.dumps would write NaN, which is not JSON
    saved = json.loads(path.read_text())
    assert saved["results"] == {"spearman_x100": None, "pairs": 3, "first_error": None}
    assert not list(path.parent.glob("*.tmp"))

    out = io.StringIO()
    print_report(report, Console(file=out, width=120))
    text = out.getvalue()
    assert "undefined" in text and "instruction: none (raw text)" in text


def test_a_random_weight_engine_is_flagged_in_the_printed_report():
    for random_weights, flagged in ((True, True), (False, False)):
        report = build_report("agree", {"a": {**ENGINE, "random_weights": False},
                                        "b": {**ENGINE, "random_weights": random_weights}, "dataset": DATASET},
                              {"cosine_worst": 0.99})
        out = io.StringIO()
        print_report(report, Console(file=out, width=120))
        assert ("RANDOM WEIGHTS" in out.getvalue()) is flagged
