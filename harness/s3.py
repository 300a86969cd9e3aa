"""A real S3 API on loopback for the tests and benchmarks: moto in server mode (its PutObject honours
If-None-Match: *), started as a process on a free port, and, for the refusal tests, a proxy in
front of it that drops the condition, as an S3-compatible store without conditional writes would.

Processes reach it the way they would reach AWS: AWS_ENDPOINT_URL and the AWS_* credentials in
their environment (`env()`), nothing of ours in between.
"""

import http.client
import http.server
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.cluster import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    workdir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    buckets: list = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint: str | None = None) -> dict:
        """What a process needs to use this server as its S3 (the standard variables only)."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint or self.endpoint}

    def start(self) -> "S3Server":
        moto = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if not moto:
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]'; make test installs it)")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=open(self.workdir / "moto.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/")
                connection.getresponse().read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {self.workdir / 'moto.log'}") from None
                time.sleep(0.1)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"])

    def bucket(self, name: str | None = None) -> str:
        """A new bucket; its name."""
        name = name or f"q3b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class S3Proxy:
    """An HTTP proxy in front of an S3 server that counts every request by its kind (GET, HEAD, PUT,
    COPY, LIST, DELETE, ...), as a bill would. strip_conditions: drop If-None-Match from every request,
    as a store that accepts conditional writes and ignores them would (an older MinIO or Ceph, some
    S3 look-alikes)."""

    def __init__(self, upstream_port: int, strip_conditions: bool = False, keep_paths: bool = False):
        upstream, proxy = upstream_port, self
        self.counts: Counter = Counter()
        self.paths: list[tuple[str, str]] | None = [] if keep_paths else None  # (kind, path) of each request
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                proxy.count(self.command, self.path, self.headers)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                dropped = ("host", "if-none-match") if strip_conditions else ("host",)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                head = self.command == "HEAD"  # no body: keep the object's own Content-Length
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not head:
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str, path: str, headers) -> None:
        query = urllib.parse.urlsplit(path).query
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if method == "GET" and ("list-type" in params or ("prefix" in params or "delimiter" in params)):
            kind = "LIST"
        elif method == "PUT" and headers.get("x-amz-copy-source"):
            kind = "COPY"
        elif method == "POST" and "delete" in params:
            kind = "DELETE"  # DeleteObjects: one request, up to 1,000 keys
        else:
            kind = method
        with self.lock:
            self.counts[kind] += 1
            if self.paths is not None:
                self.paths.append((kind, path))

    def take(self) -> Counter:
        """The counts since the last take, and start again from zero."""
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def IgnoresConditionalWrites(upstream_port: int) -> S3Proxy:
    return S3Proxy(upstream_port, strip_conditions=True)
