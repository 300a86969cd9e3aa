"""Write a demo corpus of real English sentences (STS12, read from ../shared/data) as jsonl.

The file is read from where it lies, never copied into the repository. Each sentence becomes
one row {"id": n, "text": ...}; --rerank writes {"id", "query", "document"} pairs instead.
"""

import argparse
import json
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sts12-test.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rerank", action="store_true")
    args = ap.parse_args()
    if not args.source.is_file():
        raise SystemExit(f"{args.source} not found: the STS12 sentences live in ../shared/data next to the repo")
    pairs = [json.loads(line) for line in args.source.read_text(encoding="utf-8").splitlines() if line.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        n = 0
        for p in pairs:
            rows = ([{"query": p["sentence1"], "document": p["sentence2"]}] if args.rerank
                    else [{"text": p["sentence1"]}, {"text": p["sentence2"]}])
            for row in rows:
                if n == args.rows:
                    break
                f.write(json.dumps({"id": n, **row}, ensure_ascii=False) + "\n")
                n += 1
    print(f"{args.out}: {n} rows from {args.source.name}")


if __name__ == "__main__":
    main()
