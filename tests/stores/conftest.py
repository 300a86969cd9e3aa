"""The output store's backends: a folder, and a bucket on a real S3 API server on loopback (moto in
server mode, harness/s3.py). The same contract tests run against both, the way Spark and Hadoop
test their output committers against each filesystem."""

import os

import pytest

from harness.s3 import S3Server
from tests.integration.conftest import local_cluster, redis_server  # noqa: F401  (shared fixtures)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    # This process (the store's fsspec client reads them once) and every process it starts
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(params=["folder", "bucket"])
def store_url(request, tmp_path):
    """An empty output location on each backend."""
    if request.param == "folder":
        return str(tmp_path / "out")
    server = request.getfixturevalue("s3_server")
    return f"s3://{server.bucket()}/jobs/out"
