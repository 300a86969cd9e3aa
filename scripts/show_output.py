"""Print what a job wrote: the dataset's schema, a few rows, and the rejects by reason."""

import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds


def main(root: str) -> None:
    out = Path(root)
    data = ds.dataset(out / "data", format="parquet")
    table = data.to_table()
    print(f"{out / 'data'}: {table.num_rows} rows, schema:\n{table.schema}")
    for row in table.slice(0, 3).to_pylist():
        values = row.get("embedding")
        shown = f"embedding[{len(values)}]={[round(v, 4) for v in values[:4]]}..." if values else f"score={row['score']:.4f}"
        print(f"  id={row['id']} {shown} n_tokens={row['n_tokens']} truncated={row['truncated']}")
    if (out / "rejects").is_dir():
        reasons = Counter(r.split(":")[0] for r in ds.dataset(out / "rejects").to_table(columns=["reason"])
                          .column("reason").to_pylist())
        print(f"rejects: {dict(reasons)}")
    else:
        print("rejects: none")


if __name__ == "__main__":
    main(sys.argv[1])
