"""Where a shard message may point: an absolute path or a plain bucket URL, nothing else."""

import pytest
from pydantic import ValidationError

from common.schemas import ShardMessage


def message(output: str, input_path: str = "/data/c.jsonl") -> ShardMessage:
    return ShardMessage(job_id="job-1", output=output, shard_id="00000000-000000000000", ordinal=0,
                        input_path=input_path, row_start=0, row_end=10)


@pytest.mark.parametrize("location", ["/srv/out", "s3://corpus-bucket/emb", "gs://corpus.bucket/a/b", "s3://bkt"])
def test_absolute_paths_and_bucket_urls_are_accepted(location):
    assert message(location, location).output == location


@pytest.mark.parametrize("location", [
    "relative/out",                   # not absolute
    "/srv/out\x00x",                  # NUL byte
    "s3://bkt/emb/../other",          # a '..' segment a filesystem layer may resolve
    "s3://bkt/./emb",
    "http://bkt/emb",                 # scheme not served
    "file:///etc",
    "s3://Upper_Case/emb",            # not a bucket name
    "s3://x/emb",                     # too short for a bucket name
])
def test_anything_else_is_refused_in_either_field(location):
    with pytest.raises(ValidationError):
        message(location)
    with pytest.raises(ValidationError):
        message("/srv/out", location)
