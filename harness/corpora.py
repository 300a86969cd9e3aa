"""Real text for demos, tests and benchmarks, on any machine.

- `stdlib_sentences()`: sentences from the docstrings of Python's standard library, read from its
  source files with `ast` (nothing is imported or run). Every Python installation has them, so
  `make demo` and the tests need nothing beside the repository. The exact text depends on the
  Python version; the order is deterministic for one installation.
- `sts_pairs()`: the SemEval-2012 STS test pairs, read where they lie (../shared/data beside a
  development checkout), never copied into the repository; None elsewhere.
- `sentences()`: STS sentences where the file exists, else standard-library sentences.
"""

import ast
import functools
import json
import re
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STS12 = REPO.parent / "shared" / "data" / "sts12-test.jsonl"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
MIN_CHARS, MAX_CHARS = 24, 400


def sts_pairs(path: Path = STS12) -> list[dict] | None:
    """[{"sentence1", "sentence2", "score", ...}], or None where the file is absent."""
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.cache
def stdlib_sentences() -> tuple[str, ...]:
    """Distinct sentences of prose from the standard library's docstrings (tens of thousands)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen, out = set(), []
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") for part in path.relative_to(root).parts):
            continue
        for text in _docstrings(path):
            for sentence in _sentences(text):
                if sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    return tuple(out)


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def _sentences(doc: str):
    """Prose only: paragraphs without code, tables or doctest lines, cut into sentences."""
    for paragraph in doc.split("\n\n"):
        lines = [line.strip() for line in paragraph.splitlines()]
        if not lines or any(line.startswith((">>>", "...", "$", "|", "+-", "::")) for line in lines):
            continue
        text = " ".join(lines)
        for sentence in _SENTENCE_END.split(text):
            sentence = sentence.strip()
            if MIN_CHARS <= len(sentence) <= MAX_CHARS and sentence[0].isupper() and sentence[-1] in ".!?":
                yield sentence


def sentences() -> tuple[list[str], str]:
    """(sentences, where they came from): STS12 where the file exists, else the standard library."""
    pairs = sts_pairs()
    if pairs:
        return [p["sentence1"] for p in pairs] + [p["sentence2"] for p in pairs], STS12.name
    return list(stdlib_sentences()), "the Python standard library's docstrings"


def write_corpus(path: Path, n: int, task: str = "embed", texts: list[str] | None = None) -> list[int]:
    """n rows {"id", "text"} (or {"id", "query", "document"} for rerank) of real sentences; ids 0..n-1."""
    texts = texts or sentences()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = texts[i % len(texts)]
            row = {"id": i, "text": text} if task == "embed" else {
                "id": i, "query": texts[(i * 7) % len(texts)], "document": text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return list(range(n))


def sts_rows(n: int) -> tuple[list[dict], str]:
    """(n rows in the vendor's STS eval format, where they came from): STS12's own rows where the
    file exists (its first and last n/2, two subsets of different lengths); elsewhere pairs of
    neighbouring standard-library sentences with scores made up by a fixed rule, which test the
    pipeline and the metrics, never a model's accuracy."""
    pairs = sts_pairs()
    if pairs:
        return pairs[: n - n // 2] + pairs[len(pairs) - n // 2:], STS12.name
    texts = stdlib_sentences()
    rows = [{"sentence1": texts[2 * i], "sentence2": texts[2 * i + 1], "score": float((i * 7) % 6),
             "subset": "stdlib-docstrings"} for i in range(n)]
    return rows, "pairs of standard-library docstring sentences with made-up scores"
