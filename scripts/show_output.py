"""Print what a job wrote: what made it (the files' own metadata), the schema, a few rows, the rejects.

    python scripts/show_output.py OUT
"""

import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from common.io.output import METADATA_PREFIX


def main(root: str) -> None:
    out = Path(root)
    data = ds.dataset(out / "data", format="parquet")
    first = sorted((out / "data").glob("*.parquet"))[0]
    made_by = {k.decode()[len(METADATA_PREFIX):]: v.decode() for k, v in (pq.read_metadata(first).metadata or {}).items()
               if k.decode().startswith(METADATA_PREFIX)}
    print(f"made by: {', '.join(f'{k}={v}' for k, v in sorted(made_by.items()) if v)}")
    table = data.to_table()
    print(f"{out / 'data'}: {table.num_rows} rows, schema:\n{table.schema.remove_metadata()}")
    for row in table.slice(0, 3).to_pylist():
        values = row.get("embedding")
        shown = f"embedding[{len(values)}]={[round(v, 4) for v in values[:4]]}..." if values else f"score={row['score']:.4f}"
        print(f"  id={row['id']} {shown} n_tokens={row['n_tokens']} truncated={row['truncated']}")
    if (out / "rejects").is_dir():
        reasons = Counter(r.split(":")[0] for r in ds.dataset(out / "rejects").to_table(columns=["reason"])
                          .column("reason").to_pylist())
        print(f"rejects: {dict(reasons)}")
    else:
        print("rejects: none (rejects/ appears with the first rejected row)")


if __name__ == "__main__":
    main(sys.argv[1])
