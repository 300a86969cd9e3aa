"""`workers eval dataset`: public rows converted to the evaluation jsonl, and clear errors where
`datasets` or the network is missing. A fake `datasets` module stands in for the hub."""

import sys
import types

import pytest
from typer.testing import CliRunner

from workers.eval.inputs import read_reranking, read_sts
from workers.eval.public_datasets import (
    DatasetUnavailableError,
    convert_rows,
    export_dataset,
)

HUB_STS_ROWS = [{"sentence1": "A man plays.", "sentence2": "A man is playing.", "score": 4.8},
                {"sentence1": "你好", "sentence2": "您好", "score": 1}]  # BQ's scores are integer labels
HUB_MSMARCO_ROWS = [
    {"query_id": "1048585", "query": "what is paula deen's brother",
     "positive_passages": [{"docid": "7187158", "title": "", "text": "Paula Deen and her brother Earl W. Bubba Hiers"}],
     "negative_passages": [{"docid": "7187157", "title": "", "text": "Bubba Hiers is a chef."}]},
    {"query_id": 2, "query": "dev query", "positive_passages": [{"docid": "9", "text": "a"}], "negative_passages": []},
]


def fake_datasets(rows=None, error: Exception | None = None):
    """A stand-in for the `datasets` package whose load_dataset streams `rows` or raises `error`."""
    calls = []

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        if error is not None:
            raise error
        return iter(rows)

    return types.SimpleNamespace(load_dataset=load_dataset, calls=calls)


def test_sts_rows_become_sentence_pairs_with_float_scores():
    assert list(convert_rows("sts", HUB_STS_ROWS, "x")) == [
        {"sentence1": "A man plays.", "sentence2": "A man is playing.", "score": 4.8},
        {"sentence1": "你好", "sentence2": "您好", "score": 1.0}]


def test_msmarco_rows_keep_query_id_query_and_passage_texts():
    first, second = convert_rows("reranking", HUB_MSMARCO_ROWS, "x")
    assert first == {
        "query_id": "1048585", "query": "what is paula deen's brother",
        "positive_passages": [{"text": "Paula Deen and her brother Earl W. Bubba Hiers", "docid": "7187158"}],
        "negative_passages": [{"text": "Bubba Hiers is a chef.", "docid": "7187157"}]}
    assert second["query_id"] == "2" and second["negative_passages"] == []


def test_a_source_row_of_an_unexpected_shape_is_an_error_naming_it():
    with pytest.raises(DatasetUnavailableError, match=r"mteb/sts12-sts row 1: unexpected content .*'score'"):
        list(convert_rows("sts", [HUB_STS_ROWS[0], {"sentence1": "a", "sentence2": "b"}], "mteb/sts12-sts"))


def test_exported_files_read_back_through_the_evaluation_readers(tmp_path, monkeypatch):
    fake = fake_datasets(HUB_STS_ROWS)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    counts = export_dataset("sts12", tmp_path / "sts12.jsonl")
    assert counts["rows"] == 2
    assert fake.calls == [("mteb/sts12-sts", {"split": "test", "streaming": True})]
    assert [p.score for p in read_sts(tmp_path / "sts12.jsonl")] == [4.8, 1.0]

    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(HUB_MSMARCO_ROWS))
    counts = export_dataset("msmarco", tmp_path / "msmarco.jsonl", max_rows=5)
    assert (counts["rows"], counts["queries_without_negative"]) == (2, 1)
    assert read_reranking(tmp_path / "msmarco.jsonl")[0].negatives == ("Bubba Hiers is a chef.",)


def test_max_rows_stops_reading_the_source(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(HUB_STS_ROWS * 100))
    assert export_dataset("bq", tmp_path / "bq.jsonl", max_rows=3)["rows"] == 3


def test_without_the_datasets_package_the_error_says_how_to_get_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DatasetUnavailableError, match="pip install datasets"):
        export_dataset("sts12", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_offline_the_error_names_the_source_and_the_offline_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(error=ConnectionError("no route to host")))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError) as err:
        export_dataset("msmarco", tmp_path / "out.jsonl")
    message = str(err.value)
    assert "Tevatron/msmarco-passage/resolve/main/dev.jsonl.gz" in message and "no route to host" in message
    assert "HF_DATASETS_OFFLINE" in message
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_the_dataset_command_reports_a_missing_package_cleanly(tmp_path, monkeypatch):
    from workers.cli import app

    monkeypatch.setitem(sys.modules, "datasets", None)
    result = CliRunner().invoke(app, ["eval", "dataset", "bq", "--out", str(tmp_path / "bq.jsonl")])
    assert result.exit_code == 2
    assert "needs the `datasets` package" in result.output


def test_an_unknown_dataset_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="sts12, bq, msmarco"):
        export_dataset("glue", tmp_path / "x.jsonl")


def test_a_download_failing_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    def rows_then_drop():
        yield HUB_STS_ROWS[0]
        raise ConnectionError("connection reset by peer")

    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(rows_then_drop()))
    with pytest.raises(DatasetUnavailableError, match="connection reset by peer"):
        export_dataset("sts12", tmp_path / "sts12.jsonl")
    assert not list(tmp_path.iterdir())
