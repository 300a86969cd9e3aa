"""Write a demo corpus of real English sentences as jsonl: the docstrings of Python's standard
library (harness/corpora.py), which every machine has, so `make demo` needs nothing beside the repo.

Each sentence becomes one row {"id": n, "text": ...}; --rerank writes {"id", "query", "document"}
pairs instead. The file is rewritten only when its bytes would change, and the job's identity
follows the bytes, so a second `make demo` finds the finished job.
"""

import argparse
import io
import json
from pathlib import Path

from harness.corpora import stdlib_sentences


def render(sentences: tuple[str, ...], rows: int, rerank: bool) -> bytes:
    buffer = io.StringIO()
    for n in range(min(rows, len(sentences))):
        row = ({"query": sentences[(n * 7919) % len(sentences)], "document": sentences[n]} if rerank
               else {"text": sentences[n]})
        buffer.write(json.dumps({"id": n, **row}, ensure_ascii=False) + "\n")
    return buffer.getvalue().encode("utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rerank", action="store_true")
    args = ap.parse_args()
    body = render(stdlib_sentences(), args.rows, args.rerank)
    rows = body.count(b"\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.is_file() and args.out.read_bytes() == body:
        print(f"{args.out}: unchanged ({rows} rows)")
        return
    args.out.write_bytes(body)
    print(f"{args.out}: {rows} rows of the Python standard library's docstrings")


if __name__ == "__main__":
    main()
