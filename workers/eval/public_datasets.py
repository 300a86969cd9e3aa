"""`workers eval dataset`: the public evaluation sets converted to this tool's jsonl formats.

Needs network access and the `datasets` package (imported only here, only when called): run it
on a networked machine and copy the jsonl to where the evaluation runs. Rows are streamed, so
`max_rows` reads only that many rows of a large split.

Sources:
- sts12   `mteb/sts12-sts`, split test: sentence1, sentence2, score (0-5), as MTEB scores STS12.
- bq      `C-MTEB/BQ`, split test: sentence1, sentence2, score (0/1), as C-MTEB scores BQ.
- msmarco Tevatron's MS MARCO passage files (`Tevatron/msmarco-passage`, `<split>.jsonl.gz`,
          default split dev): query_id, query, positive_passages, negative_passages. Whether a
          split carries negatives is up to the source; the conversion counts the queries without
          one, and a file with none of them measures nothing (see reranking.py).
"""

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import Qwen3BatchError

TEVATRON_MSMARCO_URL = "https://huggingface.co/datasets/Tevatron/msmarco-passage/resolve/main/{split}.jsonl.gz"


class DatasetUnavailableError(Qwen3BatchError):
    """A public dataset could not be fetched or did not have the expected fields."""


@dataclass(frozen=True)
class PublicDataset:
    name: str
    kind: str            # sts | reranking: the jsonl format written
    default_split: str
    path: str            # a hub id, or "json" for a file read through datasets' json loader
    data_files: str | None = None  # with path "json": the file's URL, "{split}" filled in


PUBLIC_DATASETS = {
    "sts12": PublicDataset("sts12", "sts", "test", "mteb/sts12-sts"),
    "bq": PublicDataset("bq", "sts", "test", "C-MTEB/BQ"),
    "msmarco": PublicDataset("msmarco", "reranking", "dev", "json", TEVATRON_MSMARCO_URL),
}


# --- conversion (pure: tested on in-memory rows) ------------------------------------------------
def convert_rows(kind: str, rows: Iterable[dict], source: str) -> Iterator[dict]:
    convert = {"sts": convert_sts_row, "reranking": convert_reranking_row}[kind]
    for index, row in enumerate(rows):
        try:
            yield convert(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetUnavailableError(f"{source} row {index}: unexpected content ({exc!r}); "
                                          "the source may have changed its format") from exc


def convert_sts_row(row: dict) -> dict:
    return {"sentence1": str_field(row, "sentence1"), "sentence2": str_field(row, "sentence2"),
            "score": float(row["score"])}


def convert_reranking_row(row: dict) -> dict:
    return {"query_id": str(row["query_id"]), "query": str_field(row, "query"),
            "positive_passages": passages(row["positive_passages"]),
            "negative_passages": passages(row["negative_passages"])}


def passages(items: list[dict]) -> list[dict]:
    """Only what the evaluation reads (text) and what identifies a passage (docid)."""
    out = []
    for item in items:
        passage = {"text": str_field(item, "text")}
        if item.get("docid") is not None:
            passage["docid"] = str(item["docid"])
        out.append(passage)
    return out


def str_field(row: dict, field: str) -> str:
    value = row[field]
    if not isinstance(value, str):
        raise TypeError(f"{field!r} is {type(value).__name__}, not a string")
    return value


def write_jsonl(rows: Iterable[dict], out: str | Path) -> dict:
    """Writes the rows atomically; returns counts (for reranking, also queries without negatives)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    counts = {"rows": 0, "queries_without_positive": 0, "queries_without_negative": 0}
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts["rows"] += 1
                if "query" in row:
                    counts["queries_without_positive"] += not row["positive_passages"]
                    counts["queries_without_negative"] += not row["negative_passages"]
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed download leaves no partial file behind
        raise
    if counts["rows"] == 0:
        tmp.unlink()
        raise DatasetUnavailableError(f"the source gave no rows; nothing written to {out}")
    os.replace(tmp, out)
    return counts


# --- fetching (needs `datasets` and the network) -------------------------------------------------
def export_dataset(name: str, out: str | Path, split: str | None = None, max_rows: int | None = None) -> dict:
    dataset = PUBLIC_DATASETS.get(name)
    if dataset is None:
        raise DatasetUnavailableError(f"unknown dataset {name!r}; choose one of {', '.join(PUBLIC_DATASETS)}")
    split = split or dataset.default_split
    source = f"{dataset.name} ({dataset.data_files or dataset.path}, split {split})".replace("{split}", split)
    rows = stream_rows(dataset, split, source)
    if max_rows is not None:
        rows = (row for _, row in zip(range(max_rows), rows))
    counts = write_jsonl(convert_rows(dataset.kind, rows, source), out)
    return {"dataset": name, "source": source, "kind": dataset.kind, "out": str(out), **counts}


def stream_rows(dataset: PublicDataset, split: str, source: str) -> Iterator[dict]:
    """Opens the stream now (a missing package or an unreachable hub fails before any file is
    created); rows are then read as they are written."""
    datasets = import_datasets()
    with reporting_source_errors(source):
        if dataset.data_files:
            files = {split: dataset.data_files.format(split=split)}
            stream = datasets.load_dataset(dataset.path, data_files=files, split=split, streaming=True)
        else:
            stream = datasets.load_dataset(dataset.path, split=split, streaming=True)
    return read_guarded(iter(stream), source)


def read_guarded(stream: Iterator[dict], source: str) -> Iterator[dict]:
    while True:
        with reporting_source_errors(source):
            row = next(stream, None)
        if row is None:
            return
        yield row


@contextmanager
def reporting_source_errors(source: str):
    # The hub client and the loaders raise many unrelated types (HTTP, offline, missing split):
    # all of them mean the same thing to the user, so all are reported as one error.
    try:
        yield
    except Exception as exc:
        raise DatasetUnavailableError(f"could not read {source} from the Hugging Face Hub: {exc}. "
                                      f"{offline_hint()}") from exc


def import_datasets():
    try:
        import datasets
    except ImportError as exc:
        raise DatasetUnavailableError(
            "`workers eval dataset` needs the `datasets` package and network access: run "
            "`pip install datasets` on a machine that reaches the Hugging Face Hub, then copy the jsonl "
            "it writes to this one (or write the jsonl yourself in the format the README gives)") from exc
    return datasets


def offline_hint() -> str:
    flags = [v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(v, "").lower() in ("1", "true")]
    if flags:
        return f"{' and '.join(flags)} is set: unset it on a machine with network access."
    return "This command needs network access to the Hugging Face Hub."
