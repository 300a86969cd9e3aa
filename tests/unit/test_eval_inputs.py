"""Evaluation files: every bad line stops the run with the file, the line and the reason."""

import json

import pytest

from workers.eval.inputs import EvalInputError, read_reranking, read_sts

GOOD_STS = {"sentence1": "A cat sits.", "sentence2": "A cat is sitting.", "score": 4.6, "subset": "x"}
GOOD_QUERY = {"query_id": 7, "query": "what is rope",
              "positive_passages": [{"docid": "1", "text": "Rope is twisted fibre."}],
              "negative_passages": [{"text": "Soap is not rope."}, {"text": "Hope floats."}]}


def write_lines(tmp_path, lines: list, name: str = "data.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
                              for line in lines))
    return path


def test_sts_rows_are_read_with_their_line_numbers_skipping_blank_lines_and_a_bom(tmp_path):
    path = write_lines(tmp_path, [b"\xef\xbb\xbf" + json.dumps(GOOD_STS).encode(), b"", b"  \r",
                                  json.dumps({**GOOD_STS, "score": 1}).encode() + b"\r"])
    pairs = read_sts(path)
    assert [(p.sentence1, p.score, p.line) for p in pairs] == [("A cat sits.", 4.6, 1), ("A cat sits.", 1.0, 4)]


def test_a_row_cap_reads_only_the_first_rows(tmp_path):
    path = write_lines(tmp_path, [GOOD_STS] * 5 + [b"{broken"])
    assert len(read_sts(path, max_rows=3)) == 3


@pytest.mark.parametrize("line, reason", [
    (b'{"sentence1": "a", "sentence2": "b", "score": 1', "malformed JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"sentence1": "a", "score": 1}', "missing field 'sentence2'"),
    (b'{"sentence1": "a", "sentence2": 5, "score": 1}', "field 'sentence2' must be a string, got int"),
    (b'{"sentence1": "a", "sentence2": "b", "score": "4.2"}', "non-numeric score '4.2'"),
    (b'{"sentence1": "a", "sentence2": "b", "score": true}', "non-numeric score True"),
    (b'{"sentence1": "a", "sentence2": "b", "score": NaN}', "non-finite score nan"),
    (b'{"sentence1": "a", "sentence2": "b"}', "missing field 'score'"),
    (b'{"sentence1": "\xff", "sentence2": "b", "score": 1}', "not valid UTF-8"),
])
def test_a_bad_sts_line_is_an_error_naming_file_line_and_reason(tmp_path, line, reason):
    path = write_lines(tmp_path, [GOOD_STS, GOOD_STS, line])
    with pytest.raises(EvalInputError) as err:
        read_sts(path)
    assert str(err.value).startswith(f"{path} line 3: ")
    assert reason in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(EvalInputError, match="holds no rows"):
        read_sts(path)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(EvalInputError, match="no such file"):
        read_sts(tmp_path / "nope.jsonl")


def test_reranking_rows_keep_positives_and_negatives_apart(tmp_path):
    path = write_lines(tmp_path, [GOOD_QUERY, {**GOOD_QUERY, "query_id": "q2", "positive_passages": []}])
    first, second = read_reranking(path)
    assert (first.query_id, first.positives, first.negatives) == (
        "7", ("Rope is twisted fibre.",), ("Soap is not rope.", "Hope floats."))
    assert second.positives == () and second.line == 2


@pytest.mark.parametrize("change, reason", [
    ({"negative_passages": None}, "field 'negative_passages' must be a list of passages, got NoneType"),
    ({"positive_passages": [{"docid": "1"}]}, "positive_passages[0] must be an object with a string 'text'"),
    ({"positive_passages": ["bare text"]}, "positive_passages[0] must be an object with a string 'text'"),
    ({"query": 3}, "field 'query' must be a string, got int"),
])
def test_a_bad_reranking_line_is_an_error_naming_file_line_and_reason(tmp_path, change, reason):
    path = write_lines(tmp_path, [{**GOOD_QUERY, **change}])
    with pytest.raises(EvalInputError) as err:
        read_reranking(path)
    assert str(err.value) == f"{path} line 1: {reason}"


def test_a_reranking_line_without_a_query_id_is_an_error(tmp_path):
    path = write_lines(tmp_path, [{k: v for k, v in GOOD_QUERY.items() if k != "query_id"}])
    with pytest.raises(EvalInputError, match="line 1: missing field 'query_id'"):
        read_reranking(path)


def test_the_dataset_hash_is_the_sha256_of_the_whole_file(tmp_path):
    import hashlib

    from workers.eval.report import describe_dataset

    path = write_lines(tmp_path, [GOOD_STS] * 3)
    described = describe_dataset(path, rows_read=3, row_cap=None)
    assert described["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
