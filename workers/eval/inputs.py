"""Reading evaluation files (jsonl): STS pairs and reranking queries.

An evaluation must not quietly score a different set of rows than the file holds, so unlike a
corpus (where a bad row becomes a reject) any bad line stops the run with an error naming the
file, the line (1-based) and the reason. Blank lines, a UTF-8 BOM and CRLF line ends are accepted.
"""

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import Qwen3BatchError

BOM = b"\xef\xbb\xbf"


class EvalInputError(Qwen3BatchError):
    """An evaluation file cannot be used as it is; the message names the file, line and reason."""


@dataclass(frozen=True)
class StsPair:
    sentence1: str
    sentence2: str
    score: float  # gold similarity (STS12: 0-5; BQ: 0/1)
    line: int


@dataclass(frozen=True)
class RerankQuery:
    query_id: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    line: int


def read_sts(path: str | Path, max_rows: int | None = None) -> list[StsPair]:
    """`sentence1`, `sentence2` (strings) and a numeric `score` per line; other fields are ignored."""
    pairs = []
    for where, obj in read_json_objects(path, max_rows):
        pairs.append(StsPair(require_text(obj, "sentence1", where), require_text(obj, "sentence2", where),
                             require_score(obj, where), where.line))
    return pairs


def read_reranking(path: str | Path, max_queries: int | None = None) -> list[RerankQuery]:
    """MS MARCO passage ranking format: `query_id`, `query`, `positive_passages` and
    `negative_passages` (lists of objects with a string `text`; either list may be empty)."""
    queries = []
    for where, obj in read_json_objects(path, max_queries):
        if "query_id" not in obj:
            raise EvalInputError(f"{where}: missing field 'query_id'")
        queries.append(RerankQuery(str(obj["query_id"]), require_text(obj, "query", where),
                                   require_passages(obj, "positive_passages", where),
                                   require_passages(obj, "negative_passages", where), where.line))
    return queries


@dataclass(frozen=True)
class Where:
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path} line {self.line}"


def read_json_objects(path: str | Path, max_rows: int | None = None) -> Iterator[tuple[Where, dict]]:
    """(where, object) for each non-blank line, up to max_rows of them."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: no such file")
    if max_rows is not None and max_rows < 1:
        raise EvalInputError(f"the row cap must be at least 1, got {max_rows}")
    rows = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if max_rows is not None and rows >= max_rows:
                return
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            if not raw.strip():
                continue
            where = Where(path, line_no)
            yield where, parse_object(raw, where)
            rows += 1
    if rows == 0:
        raise EvalInputError(f"{path}: the file holds no rows; expected one JSON object per line")


def parse_object(raw: bytes, where: Where) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise EvalInputError(f"{where}: malformed JSON (nested too deeply)") from exc
    if not isinstance(obj, dict):
        raise EvalInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def require_text(obj: dict, field: str, where: Where) -> str:
    if field not in obj:
        raise EvalInputError(f"{where}: missing field {field!r}")
    value = obj[field]
    if not isinstance(value, str):
        raise EvalInputError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def require_score(obj: dict, where: Where) -> float:
    if "score" not in obj:
        raise EvalInputError(f"{where}: missing field 'score'")
    value = obj["score"]
    # bool is an int in Python; a true/false "score" is a broken file, not a similarity of 1/0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvalInputError(f"{where}: non-numeric score {value!r}; expected a number")
    if not math.isfinite(value):
        raise EvalInputError(f"{where}: non-finite score {value!r}")
    return float(value)


def require_passages(obj: dict, field: str, where: Where) -> tuple[str, ...]:
    if field not in obj:
        raise EvalInputError(f"{where}: missing field {field!r}")
    passages = obj[field]
    if not isinstance(passages, list):
        raise EvalInputError(f"{where}: field {field!r} must be a list of passages, got {type(passages).__name__}")
    texts = []
    for i, passage in enumerate(passages):
        if not isinstance(passage, dict) or not isinstance(passage.get("text"), str):
            raise EvalInputError(f"{where}: {field}[{i}] must be an object with a string 'text'")
        texts.append(passage["text"])
    return tuple(texts)
