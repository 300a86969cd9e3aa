"""The planning join of common/io/content.py (ContentIndex), against a plain Python dict reference:
random corpora with many repeats, reuse sources, partitions split on disk (its memory bounds set
tiny), and the stored table's order and counts."""

import hashlib
import random
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.io.content import HASH_BYTES, NEW, SOURCES_SCHEMA, ContentIndex, content_hash


def digest(n: int) -> bytes:
    return hashlib.blake2b(str(n).encode(), digest_size=HASH_BYTES).digest()


def make_corpus(rng: random.Random, files: int, distinct: int, skip: float = 0.05):
    """Rows per file, and for each runnable row its input number (many repeats: `distinct` inputs
    for several times as many rows); some rows are not runnable and never reach the index."""
    rows = []  # (file, row, input)
    sizes = []
    for f in range(files):
        n = rng.randrange(50, 900)
        sizes.append(n)
        for r in range(n):
            if rng.random() >= skip:
                rows.append((f, r, rng.randrange(distinct) if rng.random() < 0.8 else rng.randrange(10)))
    return sizes, rows


def make_sources(rng: random.Random, count: int, distinct: int):
    """Per source, its data files as lists of input numbers (some inputs in several files and sources)."""
    return [[[rng.randrange(distinct * 2) for _ in range(rng.randrange(1, 300))] for _ in range(rng.randrange(1, 4))]
            for _ in range(count)]


def shard_starts_of(sizes: list[int], shard_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(each file's first corpus row, each shard's first corpus row): shards cut inside each file."""
    bases, starts, total = [], [], 0
    for n in sizes:
        bases.append(total)
        starts += [total + s for s in range(0, n, shard_rows)]
        total += n
    return np.asarray(bases, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def reference(rows, sources, bases, starts, dedup: bool) -> list[tuple]:
    """The join written plainly: per input, the first row of the lowest source holding it (by
    source, file, row), else its first corpus row; every other corpus row copies it."""
    held = {}
    file_no = 0
    for origin, files in enumerate(sources):
        for values in files:
            for pos, value in enumerate(values):
                held.setdefault(value, (origin, file_no, pos))
            file_no += 1
    first = {}
    out = []
    for f, r, value in sorted(rows):
        if value in held:
            origin, ref, pos = held[value]
            out.append((f, r, digest(value), origin, ref, pos))
        elif value in first:
            if dedup:
                of, orow = first[value]
                shard = int(np.searchsorted(starts, bases[of] + orow, side="right") - 1)
                out.append((f, r, digest(value), NEW, shard, orow))
        else:
            first[value] = (f, r)
    return out


def run_index(index: ContentIndex, rows, sources, bases, starts, tmp_path, batch: int = 97) -> list[tuple]:
    """Sources first, then each file's rows in order, in batches (as planning adds them)."""
    file_no = 0
    for origin, files in enumerate(sources):
        for values in files:
            index.add_source(origin, file_no, b"".join(digest(v) for v in values))
            file_no += 1
    for f in sorted({f for f, _, _ in rows}):
        mine = [(r, v) for ff, r, v in rows if ff == f]
        for i in range(0, len(mine), batch):
            chunk = mine[i:i + batch]
            index.add(f, np.asarray([r for r, _ in chunk], dtype=np.int64), b"".join(digest(v) for _, v in chunk))
    path = tmp_path / "sources.parquet"
    total = int(bases[-1]) + max(r for f, r, _ in rows if f == len(bases) - 1) + 1
    found = index.finish(path, bases, starts, total)
    if not path.exists():
        assert found == 0
        return []
    table = pq.read_table(path)
    assert table.schema.equals(SOURCES_SCHEMA)
    assert found == table.num_rows
    return list(zip(table.column("file_index").to_pylist(), table.column("row").to_pylist(),
                    table.column("hash").to_pylist(), table.column("origin").to_pylist(),
                    table.column("ref").to_pylist(), table.column("pos").to_pylist()))


@pytest.fixture
def tiny_bounds(monkeypatch):
    """Memory bounds so small that the spill has many partitions, flushes every few batches, and
    joins each partition in pieces split off on disk (several levels deep). Yields the pieces
    joined, by level of split (0: a partition joined whole)."""
    monkeypatch.setattr(ContentIndex, "RECORDS_PER_PARTITION", 150)
    monkeypatch.setattr(ContentIndex, "FLUSH_RECORDS", 150)
    monkeypatch.setattr(ContentIndex, "MAX_AT_ONCE", 40)
    joined = Counter()
    original = ContentIndex._join

    def counting(self, records, *args):
        joined[len(records) > 0] += 1
        return original(self, records, *args)

    monkeypatch.setattr(ContentIndex, "_join", counting)
    yield joined


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("dedup", [True, False])
def test_the_join_split_on_disk_gives_what_a_dict_gives_on_random_repeats(seed, dedup, tiny_bounds, tmp_path):
    rng = random.Random(seed)
    sizes, rows = make_corpus(rng, files=rng.randrange(2, 6), distinct=rng.randrange(50, 600))
    sources = make_sources(rng, rng.randrange(0, 3), distinct=300)
    bases, starts = shard_starts_of(sizes, shard_rows=rng.choice([7, 64, 250]))
    expected = reference(rows, sources, bases, starts, dedup)
    index = ContentIndex(len(rows) + sum(len(v) for s in sources for v in s), dedup=dedup)
    try:
        assert index.partitions > 4
        got = run_index(index, rows, sources, bases, starts, tmp_path)
    finally:
        index.close()
    assert tiny_bounds[True] > 2 * index.partitions  # partitions were split on disk into pieces
    assert got == expected
    assert index.copies == sum(1 for e in expected if e[3] == NEW)
    assert index.reusable == sum(1 for e in expected if e[3] != NEW)
    assert not index.dir.exists()


def test_the_join_in_one_partition_in_memory_gives_the_same_as_split_on_disk(monkeypatch, tmp_path):
    rng = random.Random(9)
    sizes, rows = make_corpus(rng, files=3, distinct=200)
    sources = make_sources(rng, 2, distinct=150)
    bases, starts = shard_starts_of(sizes, shard_rows=100)
    results = []
    for bounds in ({}, {"RECORDS_PER_PARTITION": 300, "FLUSH_RECORDS": 64, "MAX_AT_ONCE": 16}):
        for name, value in bounds.items():
            monkeypatch.setattr(ContentIndex, name, value)
        index = ContentIndex(len(rows), dedup=True)
        try:
            folder = tmp_path / str(len(results))
            folder.mkdir()
            results.append(run_index(index, rows, sources, bases, starts, folder))
        finally:
            index.close()
    assert results[0] == results[1] == reference(rows, sources, bases, starts, True)
    assert len(results[0]) > 100


def test_a_reuse_source_wins_over_the_first_occurrence_and_the_lowest_source_over_the_others(tmp_path):
    # Input 1: in the corpus three times and in sources 0 and 1; input 2: only in source 1, in
    # two files; input 3: in the corpus twice (first in shard 1), in no source; input 4: once
    bases, starts = np.asarray([0], dtype=np.int64), np.asarray([0, 1], dtype=np.int64)
    index = ContentIndex(20)
    try:
        index.add_source(0, 0, digest(9) + digest(1))
        index.add_source(1, 1, digest(2) + digest(1))
        index.add_source(1, 2, digest(2))
        index.add(0, np.arange(7, dtype=np.int64), b"".join(digest(v) for v in (1, 3, 1, 2, 3, 4, 1)))
        path = tmp_path / "sources.parquet"
        found = index.finish(path, bases, starts, 7)
    finally:
        index.close()
    table = pq.read_table(path).to_pylist()
    # (file, row, origin, ref, pos): input 1 from source 0's file 0 row 1 (not its first corpus row,
    # nor source 1), input 2 from source 1's first file, input 3's second row from its first (shard
    # 1, row 1); input 3's first row and input 4 are computed
    assert [(t["file_index"], t["row"], t["origin"], t["ref"], t["pos"]) for t in table] == [
        (0, 0, 0, 0, 1), (0, 2, 0, 0, 1), (0, 3, 1, 1, 0), (0, 4, NEW, 1, 1), (0, 6, 0, 0, 1)]
    assert [t["hash"] for t in table] == [digest(v) for v in (1, 1, 2, 3, 1)]
    assert found == 5 and (index.copies, index.reusable) == (1, 4)


def test_without_dedup_only_rows_a_source_holds_are_copied(tmp_path):
    bases, starts = np.asarray([0, 5], dtype=np.int64), np.asarray([0, 5], dtype=np.int64)
    index = ContentIndex(20, dedup=False)
    try:
        index.add_source(0, 0, digest(1) + digest(2))
        index.add(0, np.arange(5, dtype=np.int64), b"".join(digest(v) for v in (1, 3, 3, 1, 4)))
        index.add(1, np.arange(3, dtype=np.int64), b"".join(digest(v) for v in (3, 2, 4)))
        path = tmp_path / "sources.parquet"
        found = index.finish(path, bases, starts, 8)
    finally:
        index.close()
    table = pq.read_table(path).to_pylist()
    assert found == 3 and (index.copies, index.reusable) == (0, 3)
    assert [(t["file_index"], t["row"], t["origin"], t["ref"], t["pos"]) for t in table] == [
        (0, 0, 0, 0, 0), (0, 3, 0, 0, 0), (1, 1, 0, 0, 1)]


def test_the_table_is_sorted_by_file_and_row_even_when_files_arrive_out_of_order(tiny_bounds, tmp_path):
    rng = random.Random(4)
    bases = np.asarray([0, 1000, 2500], dtype=np.int64)
    starts = np.asarray([0, 500, 1000, 1500, 2000, 2500], dtype=np.int64)
    rows = []
    index = ContentIndex(4000)
    try:
        for f, n in ((2, 800), (0, 1000), (1, 1500)):  # files out of order, batches within them too
            order = list(range(n))
            rng.shuffle(order)
            for i in range(0, n, 200):
                batch = sorted(order[i:i + 200])
                values = [rng.randrange(300) for _ in batch]
                rows += [(f, r, v) for r, v in zip(batch, values)]
                index.add(f, np.asarray(batch, dtype=np.int64), b"".join(digest(v) for v in values))
        path = tmp_path / "sources.parquet"
        found = index.finish(path, bases, starts, 3300)
    finally:
        index.close()
    table = pq.read_table(path)
    keys = list(zip(table.column("file_index").to_pylist(), table.column("row").to_pylist()))
    assert found == len(keys) == 3300 - len({v for _, _, v in rows})
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # and each copy names the first corpus row of its input (by file, then row), and that row's shard
    got = list(zip(keys, table.column("hash").to_pylist(), table.column("origin").to_pylist(),
                   table.column("ref").to_pylist(), table.column("pos").to_pylist()))
    assert [(f, r, *rest) for (f, r), *rest in got] == reference(rows, [], bases, starts, True)


def test_the_content_hash_keeps_a_pair_apart_from_another_split_of_the_same_characters():
    assert content_hash(("alpha beta", "gamma")) != content_hash(("alpha", " betagamma"))
    assert content_hash(("ab",)) != content_hash(("a", "b"))
    assert content_hash(("é",)) == content_hash(("é",)) and len(content_hash(("x",))) == HASH_BYTES


def test_one_input_repeated_beyond_the_memory_bound_is_joined_whole(tiny_bounds, tmp_path):
    # Given one input on 2,000 rows of two files, far more records than MAX_AT_ONCE, beside others
    rows = [(f, r, 7 if r % 5 else 1000 + r) for f in (0, 1) for r in range(1200)]
    bases, starts = shard_starts_of([1200, 1200], shard_rows=300)
    index = ContentIndex(len(rows))
    try:
        got = run_index(index, rows, [], bases, starts, tmp_path)
    finally:
        index.close()
    # Then its pieces could not be split further, and the join is still the dict's
    assert got == reference(rows, [], bases, starts, True)
    assert sum(1 for g in got if g[2] == digest(7)) == 2 * 960 - 1
