"""Reading corpora: every bad row becomes a reject with a reason; bad files fail before enqueue."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.io import corpus

COLUMNS = ("text",)


class Ids(list):
    """Collects the ids a scan streams, as Python values (normalised as the reader normalises them)."""

    def add(self, file_index, rows, values):
        self.extend(values)

    def add_array(self, file_index, first_row, values):
        self.extend(corpus.normalize_id(v) for v in values.to_pylist())


def scan(path, shard_rows=1000, fmt=None, columns=COLUMNS, id_column="id"):
    ids = Ids()
    result = corpus.scan_file(path, fmt or ("parquet" if path.suffix == ".parquet" else "jsonl"), 0, columns,
                              id_column, shard_rows, ids)
    return result, ids


def read_all(path, **kw):
    result, _ = scan(path, **kw)
    rows = []
    for shard in result.shards:
        rows.extend(corpus.read_rows(result.input, shard, kw.get("columns", COLUMNS), kw.get("id_column", "id")))
    return result, rows


def test_every_bad_jsonl_line_becomes_a_reject_with_its_line_number_and_reason(tmp_path):
    # Given a jsonl file with a BOM, CRLF endings, blank lines and one of each bad case
    lines = [
        b'{"id": 1, "text": "good"}',
        b'{"id": 2, "text": null}',
        b'{"id": 3}',
        b'{"id": 4, "text": 42}',
        b'{"id": 5, "text": "   "}',
        b'{"id": 6, "text": "\xff\xfe broken"}',
        b'{"id": 7, "text": "\\ud800 lone surrogate"}',
        b'{"id": 8, "text": "a", "text": "b"}',
        b'{"id": 9, "text": ',
        b'[1, 2, 3]',
        b'{"id": 10, "text": NaN}',
        b'[' * 100_000 + b']' * 100_000,
        b'{"text": "no id"}',
        b'{"id": 14.5, "text": "float id"}',
        b'{"id": "fifteen", "text": "string ids are fine"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines[:3]) + b"\r\n\r\n" + b"\n".join(lines[3:]) + b"\n")
    # When every row is read
    result, rows = read_all(path)
    # Then blank lines are not rows, and each row is either values or a reason, at its real line number
    assert result.input.rows == len(lines)
    by_line = {r.row: r for r in rows}
    reasons = {line: (r.reject or "").split(":")[0] for line, r in by_line.items()}
    assert reasons == {
        1: "", 2: "null_text", 3: "missing_text", 5: "non_string_text", 6: "empty_text", 7: "invalid_utf8",
        8: "invalid_unicode", 9: "duplicate_key", 10: "malformed_json", 11: "not_an_object",
        12: "non_string_text", 13: "malformed_json", 14: "missing_id", 15: "missing_id", 16: "",
    }
    assert by_line[1].values == ("good",) and by_line[1].id == 1
    assert by_line[16].id == "fifteen"


def test_a_line_over_the_size_cap_is_rejected_unparsed(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.defaults, "MAX_JSONL_LINE_BYTES", 1000)
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": 1, "text": "x" * 5000}) + "\n" + json.dumps({"id": 2, "text": "ok"}) + "\n")
    _, rows = read_all(path)
    assert rows[0].reject.startswith("line_too_long") and rows[1].values == ("ok",)


def test_jsonl_shards_start_at_recorded_byte_offsets_and_line_numbers(tmp_path):
    # Given 25 rows with blank lines between some of them, cut into shards of 10
    path = tmp_path / "c.jsonl"
    with open(path, "w") as f:
        for i in range(25):
            f.write(json.dumps({"id": i, "text": f"row {i}"}) + "\n" + ("\n" if i % 7 == 0 else ""))
    result, ids = scan(path, shard_rows=10)
    # Then shards cover the rows exactly, and reading a shard alone gives its rows and true lines
    assert [(s.row_start, s.row_end) for s in result.shards] == [(0, 10), (10, 20), (20, 25)]
    assert ids == list(range(25))
    third = list(corpus.read_rows(result.input, result.shards[2], COLUMNS, "id"))
    assert [r.id for r in third] == list(range(20, 25))
    lines = path.read_text().split("\n")
    for r in third:
        assert json.loads(lines[r.row - 1])["id"] == r.id


def test_a_file_that_changed_since_planning_fails_its_shard_clearly(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in range(10)))
    result, _ = scan(path)
    path.write_text(json.dumps({"id": 0, "text": "t"}) + "\n")
    with pytest.raises(corpus.InputError, match=r"input_changed: .*c.jsonl bytes 0\.\.230 .*10 rows planned, 1 found"):
        list(corpus.read_rows(result.input, result.shards[0], COLUMNS, "id"))


@pytest.mark.parametrize("group_rows, shard_rows, ranges", [
    ([10] * 10, 30, [(0, 30), (30, 60), (60, 90), (90, 100)]),  # small groups gathered, never split
    ([17] * 6, 30, [(0, 17), (17, 34), (34, 51), (51, 68), (68, 85), (85, 102)]),  # two would be over 30
    ([100], 30, [(0, 30), (30, 60), (60, 90), (90, 100)]),  # a large group cut into pieces
    ([5, 100, 5, 5], 30, [(0, 5), (5, 35), (35, 65), (65, 95), (95, 105), (105, 115)]),
])
def test_parquet_shards_follow_row_group_boundaries(group_rows, shard_rows, ranges):
    assert list(corpus.row_group_ranges(group_rows, shard_rows)) == ranges


def test_parquet_shards_read_only_their_row_range_across_and_inside_row_groups(tmp_path):
    path = tmp_path / "c.parquet"
    table = pa.table({"id": list(range(100)), "text": [f"row {i}" if i % 10 else None for i in range(100)]})
    pq.write_table(table, path, row_group_size=10)
    result, ids = scan(path, shard_rows=30)
    assert ids == list(range(100)) and result.input.rows == 100
    shard = result.shards[1]  # rows 30..60: three whole row groups
    rows = list(corpus.read_rows(result.input, shard, COLUMNS, "id"))
    assert [r.row for r in rows] == list(range(30, 60))
    assert [r.id for r in rows if r.reject] == [30, 40, 50]
    assert all(r.reject.startswith("null_text") for r in rows if r.reject)
    pq.write_table(table, path, row_group_size=100)
    result, _ = scan(path, shard_rows=30)
    inside = list(corpus.read_rows(result.input, result.shards[2], COLUMNS, "id"))  # rows 60..90 of one group
    assert [r.id for r in inside] == list(range(60, 90))


def test_a_parquet_file_rewritten_after_planning_is_refused_before_a_row_is_read(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": list(range(20)), "text": [f"row {i}" for i in range(20)]}), path)
    result, _ = scan(path, shard_rows=10)
    pq.write_table(pa.table({"id": list(range(20)), "text": [f"new {i}" for i in range(20)]}), path)
    with pytest.raises(corpus.InputChangedError, match=r"input_changed: .*c.parquet its Parquet footer"):
        next(corpus.read_rows(result.input, result.shards[0], COLUMNS, "id"))


@pytest.mark.parametrize("table, message", [
    (pa.table({"id": [1], "body": ["x"]}), "no column 'text'"),
    (pa.table({"id": [1], "text": [1]}), "has type int64, expected string"),
    (pa.table({"id": [1], "text": [["a", "b"]]}), "expected string"),
    (pa.table({"text": ["x"]}), "no id column 'id'"),
])
def test_a_parquet_file_with_the_wrong_columns_fails_before_anything_is_enqueued(tmp_path, table, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(corpus.InputError, match=message) as err:
        scan(path)
    assert str(path) in str(err.value)


def test_a_corrupt_parquet_footer_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "corrupt.parquet"
    pq.write_table(pa.table({"id": [1], "text": ["x"]}), path)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(corpus.InputError, match="not a readable Parquet file") as err:
        scan(path)
    assert str(path) in str(err.value)


def test_row_numbers_serve_as_ids_when_asked(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    result, ids = scan(path, id_column="@row")
    assert ids == []
    info = result.input.model_copy(update={"row_base": 100})  # the file's first row is row 100 of the corpus
    rows = list(corpus.read_rows(info, result.shards[0], COLUMNS, "@row"))
    assert [r.id for r in rows] == [100, 101]


def test_inputs_are_found_in_a_folder_or_glob_in_a_stable_order(tmp_path):
    for name in ["b.jsonl", "a.parquet", "sub/c.ndjson", "_plan/x.parquet", ".hidden/y.jsonl", "notes.json"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = [Path(p).relative_to(tmp_path).as_posix() for p, _ in corpus.discover_inputs(str(tmp_path))]
    assert found == ["a.parquet", "b.jsonl", "sub/c.ndjson"]
    assert [Path(p).name for p, _ in corpus.discover_inputs(str(tmp_path / "*.jsonl"))] == ["b.jsonl"]
    with pytest.raises(corpus.InputError, match="no such file"):
        corpus.discover_inputs(str(tmp_path / "missing*.jsonl"))
