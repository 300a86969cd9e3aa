"""No entry in Redis can stop a worker. Each test plays someone who can write to Redis and puts
garbage where workers read: the shared model queue, a worker's personal queue, the compile queue,
the unacked messages, the remote-control channel. Real redis-server and worker processes (the
simulated backend): every entry is dropped with one log line saying what and where, the workers
stay alive and beating, and a real job then completes with every id exactly once."""

import base64
import copy
import json
import time
import uuid

import pytest
from celery import Celery
from kombu import Connection

from common import keys
from common.broker_transport import Transport, entry_problem
from common.celery_app import make_app
from common.celery_consumer import headers_problem
from common.model_identity import model_ref
from common.settings import Settings
from harness import cluster
from tests.cluster.conftest import SIMULATED, processes  # noqa: F401  (fixture)
from tests.cluster.test_broker_access import tls_redis  # noqa: F401  (fixture)
from tests.faults.conftest import SIM, send_through_plain_celery, submit, wait_for
from tests.integration.conftest import FAST_RETRIES, assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow

# Beats every second, so that "still beating" is seen at once.
QUICK_BEATS = {"QWEN3B_HEARTBEAT_TTL_S": "6"}
SCRATCH = "scratch"
LEFT_OUT = object()


def celery_written(url: str, client, task: str) -> dict:
    """A message exactly as a stock Celery client writes it into Redis, read back off a scratch queue."""
    send_through_plain_celery(url, SCRATCH, task, {})
    return json.loads(client.rpop(SCRATCH))


def addressed(template: dict, queue: str, ident: str, body: bytes | None = None, **headers) -> str:
    """The template as a new message on `queue`, with `ident` as its delivery tag and id, the body
    (before kombu's base64) and some headers replaced; a header given as LEFT_OUT is left out."""
    message = copy.deepcopy(template)
    message["properties"]["delivery_tag"] = ident
    message["properties"]["delivery_info"].update(exchange=queue, routing_key=queue)
    message["headers"].update({"id": ident, **headers})
    message["headers"] = {k: v for k, v in message["headers"].items() if v is not LEFT_OUT}
    if body is not None:
        message["body"] = base64.b64encode(body).decode()
    return json.dumps(message)


def without_properties(template: dict, queue: str, ident: str) -> str:
    message = json.loads(addressed(template, queue, ident))
    del message["properties"]
    return json.dumps(message)


def with_raw_body(template: dict, queue: str, ident: str, body: str) -> str:
    message = json.loads(addressed(template, queue, ident))
    message["body"] = body
    return json.dumps(message)


def not_a_message(queue: str, why: str) -> str:
    return f"dropped an entry of queue '{queue}' that is not a message ({why})"


def not_for_celery(queue: str, why: str) -> str:
    return f"dropped a task message that Celery cannot read ({why}): routing key '{queue}'"


# kind -> (template, queue, ident) -> (the entry, what the worker logs for it). The template is a message of the
# queue's task as a stock Celery client writes it; ident a fresh id, the delivery tag of any envelope made of it.
GARBAGE = {
    "not JSON": lambda t, q, i: ("x", not_a_message(q, "not JSON")),
    "a JSON array": lambda t, q, i: ("[]", not_a_message(q, "not a JSON object")),
    "an empty object": lambda t, q, i: ("{}", not_a_message(q, "no properties object")),
    "a JSON string": lambda t, q, i: ('"a string"', not_a_message(q, "not a JSON object")),
    "JSON nested too deep": lambda t, q, i: ("[" * 100_000, not_a_message(q, "not JSON")),
    "an envelope without properties": lambda t, q, i: (without_properties(t, q, i),
                                                       not_a_message(q, "no properties object")),
    "a body that is not base64": lambda t, q, i: (with_raw_body(t, q, i, "%% not base64 %%"),
                                                  not_a_message(q, "a body that is not base64")),
    # Well-formed envelopes, Celery-looking messages: Celery's own answer where it has one
    "a body that is not JSON": lambda t, q, i: (addressed(t, q, i, body=b"not json"), "Can't decode message body"),
    "an unknown task": lambda t, q, i: (addressed(t, q, i, task="no.such.task"),
                                        "Received unregistered task of type 'no.such.task'"),
    # The pool child fails it before the task runs (Celery warns of that once per process): received, then acked
    "kwargs that are a list": lambda t, q, i: (addressed(t, q, i, body=b"[[], [1, 2], {}]"), f"[{i}] received"),
    "no id header": lambda t, q, i: (addressed(t, q, i, id=LEFT_OUT), not_for_celery(q, "no id header string")),
    "a body that is not [args, kwargs, options]": lambda t, q, i: (
        addressed(t, q, i, body=b'{"a": 1}'), "dropped a task message that Celery cannot read (ValueError"),
    "a time limit that is not two numbers": lambda t, q, i: (
        addressed(t, q, i, timelimit="abc"), not_for_celery(q, "a timelimit header that is not [hard, soft] seconds")),
}


def seen(workers, text: str) -> int:
    """How often the workers logged `text`; a worker that exited fails the test with its reason."""
    for w in workers:
        assert w.alive(), f"{w.name} exited:\n{w.log()[-3000:]}"
    return sum(w.log().count(text) for w in workers)


def push_and_see_it_dropped(client, queue: str, kind: str, readers, template: dict | None = None) -> None:
    """Pushes one entry of that kind, and waits for its log line and for it to be gone: off the
    queue, and (an envelope) out of the unacked messages."""
    ident = str(uuid.uuid4())
    entry, expected = GARBAGE[kind](template, queue, ident)
    before = seen(readers, expected)
    client.lpush(queue, entry)
    wait_for(lambda: seen(readers, expected) > before, 30, f"{kind} on {queue}: {expected!r}")
    wait_for(lambda: client.llen(queue) == 0 and not client.hexists("unacked", ident), 30, f"{kind} gone from {queue}")


def assert_alive_and_beating(client, workers, since: float) -> None:
    for w in workers:
        assert w.alive(), f"{w.name} exited:\n{w.log()[-3000:]}"
    wait_for(lambda: all((cluster.heartbeat(client, w.name) or {}).get("seen_at", 0) > since for w in workers), 15,
             "a heartbeat from every worker after the garbage")


def start_compile_worker(c, tmp_path) -> cluster.Worker:
    """Beside the shard workers: their cluster-wide settings (FAST_RETRIES) and roots."""
    worker = cluster.start_compile_worker(c.url, "compile-w0", c.logdir, env={
        **c.roots, **FAST_RETRIES, **QUICK_BEATS, "QWEN3B_ARTIFACT_STORE": str(tmp_path / "artifacts")})
    c.workers.append(worker)
    cluster.wait_for_workers(c.redis.client(), [worker])
    return worker


def run_a_real_job(c, model, tmp_path, rows: int = 200) -> None:
    ids = write_corpus(tmp_path / "c.jsonl", rows)
    submit(c, model, tmp_path / "c.jsonl", tmp_path / "out", 50)
    wait_until_finished(tmp_path / "out", timeout_s=120)
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_garbage_on_the_shared_personal_and_compile_queues_is_dropped_and_a_real_job_then_completes(
        local_cluster, tiny_embed_model, tmp_path):
    # Given two shard workers of one model and a compile worker
    shard_workers = local_cluster.start_workers(2, tiny_embed_model, backend="simulated", env={**SIM, **QUICK_BEATS})
    compiler = start_compile_worker(local_cluster, tmp_path)
    client = local_cluster.redis.client()
    shared = keys.shard_queue("embed", model_ref(str(tiny_embed_model)).identity, "fp32", "simulated")
    shard_task = celery_written(local_cluster.url, client, keys.TASK_EMBED_SHARD)
    compile_task = celery_written(local_cluster.url, client, keys.TASK_COMPILE)
    readers = {shared: (shard_workers, shard_task),
               keys.worker_queue(shard_workers[0].name): (shard_workers[:1], shard_task),
               keys.COMPILE_QUEUE: ([compiler], compile_task),
               keys.worker_queue(compiler.name): ([compiler], compile_task)}
    # When every kind of garbage is pushed onto every queue they consume, one entry at a time
    for queue, (workers, template) in readers.items():
        for kind in GARBAGE:
            push_and_see_it_dropped(client, queue, kind, workers, template)
    # Then every worker is alive and beating
    assert_alive_and_beating(client, [*shard_workers, compiler], since=time.time())
    # and still consumes: the compile worker runs (and refuses) a compile message, a real job completes
    send_through_plain_celery(local_cluster.url, keys.COMPILE_QUEUE, keys.TASK_COMPILE, {})
    wait_for(lambda: "refused a compile message" in compiler.log(), 30, "the compile worker taking a message")
    run_a_real_job(local_cluster, tiny_embed_model, tmp_path)


def plant_unacked(client, entries: dict) -> None:
    """Entries among the unacked messages, each older than any visibility timeout: the next worker to
    start, or the next sweep of any worker, requeues them."""
    for tag, entry in entries.items():
        client.hset("unacked", tag, entry)
        client.zadd("unacked_index", {tag: 0})


def test_garbage_planted_among_the_unacked_messages_is_dropped_and_a_real_job_then_completes(
        local_cluster, tiny_embed_model, tmp_path):
    client = local_cluster.redis.client()
    # Given entries that are not [message, exchange, routing key] among the unacked messages, planted before the
    # workers start (they requeue at start) and after (their sweeps requeue)
    before = {"planted-not-json": "x", "planted-empty-list": "[]"}
    after = {"planted-object": "{}", "planted-number": "7", "planted-too-deep": "[" * 100_000}
    plant_unacked(client, before)
    workers = local_cluster.start_workers(2, tiny_embed_model, backend="simulated", env={**SIM, **QUICK_BEATS})
    plant_unacked(client, after)
    # Then each is dropped with a line naming it, and nothing of them is left
    for tag in {**before, **after}:
        wait_for(lambda: seen(workers, f"dropped an entry of the unacked messages (tag '{tag}')"), 60, f"{tag} dropped")
    assert not client.hkeys("unacked") and not client.zcard("unacked_index")
    # and the workers are alive and beating, and a real job completes
    assert_alive_and_beating(client, workers, since=time.time())
    run_a_real_job(local_cluster, tiny_embed_model, tmp_path)


def test_garbage_published_on_the_remote_control_channel_is_dropped_and_the_worker_still_answers_a_ping(
        local_cluster, tiny_embed_model):
    # Given a worker, which listens to Celery's remote-control (pidbox) channel
    [worker] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env={**SIM, **QUICK_BEATS})
    client = local_cluster.redis.client()
    # When garbage is published there
    for entry in ("[]", "{}", json.dumps({"properties": {"delivery_tag": "t"}}), "x"):
        client.publish("/0.celery.pidbox", entry)
    # Then the three that are JSON are dropped with a line (kombu skips what is not JSON itself)
    wait_for(lambda: seen([worker], "dropped an entry of the fanout exchange 'celery.pidbox'") == 3, 30,
             "the garbage dropped")
    assert_alive_and_beating(client, [worker], since=time.time())
    # and the worker still answers remote control
    app = Celery(broker=local_cluster.url)
    try:
        replies = app.control.ping(timeout=5)
    finally:
        app.close()
    assert any(f"celery@{worker.name}" in reply for reply in replies), replies


def test_over_tls_garbage_on_a_workers_queue_is_dropped_and_a_real_job_then_completes(
        tls_redis, processes, tiny_embed_model, tmp_path):  # noqa: F811  (fixtures)
    # Given a worker on a TLS-only Redis (rediss://)
    env = {**SIMULATED, **QUICK_BEATS, "QWEN3B_BROKER_TLS_CA_FILE": str(tls_redis.tls_dir / "ca.crt")}
    worker = cluster.start_cli(["workers", "start", "--model", str(tiny_embed_model), "--backend", "simulated",
                                "--dtype", "fp32", "--name", "tls-w0"], "tls-w0", tls_redis.url, tmp_path, env)
    processes.append(worker)
    client = tls_redis.client()
    cluster.wait_for_workers(client, [worker])
    # When garbage is pushed onto its queue
    queue = keys.worker_queue("tls-w0")
    for kind in ("not JSON", "a JSON array"):
        push_and_see_it_dropped(client, queue, kind, [worker])
    # Then it is alive, and a job submitted over TLS completes with every row exactly once
    assert_alive_and_beating(client, [worker], since=time.time())
    ids = write_corpus(tmp_path / "c.jsonl", 200)
    done = cluster.run_cli("producer", ["submit", str(tmp_path / "c.jsonl"), "--model", str(tiny_embed_model), "--out",
                                        str(tmp_path / "out"), "--backend", "simulated", "--dtype", "fp32",
                                        "--shard-rows", "50", "--wait"], tls_redis.url, 120, env)
    assert done.returncode == 0, done.stderr + worker.log()[-3000:]
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_a_kombu_consumer_of_a_redis_or_redis_socket_url_drops_garbage_and_gets_the_next_message(tmp_path):
    # Given a Redis that also listens on a unix socket, and a process that has made its Celery app
    socket_path = tmp_path / "redis.sock"
    server = cluster.RedisServer(tmp_path / "redis", extra_args=["--unixsocket", str(socket_path)]).start()
    make_app(Settings(broker_url=server.url))
    try:
        for url in (server.url, f"redis+socket://{socket_path}"):
            with Connection(url) as connection:
                assert isinstance(connection.transport, Transport), url
                queue = connection.SimpleQueue("garbage-then-message")
                # When garbage precedes a message, for both ways kombu takes one (BRPOP, and RPOP for basic_get)
                for take in (lambda: queue.get(timeout=5), lambda: first_waiting(queue)):
                    server.client().lpush("garbage-then-message", "x", "[]")
                    queue.put({"n": 1})
                    # Then the message is the first thing the consumer gets
                    message = take()
                    assert message.payload == {"n": 1}, url
                    message.ack()
                queue.close()
    finally:
        server.stop()


def first_waiting(queue, tries: int = 5):
    """basic_get answers "nothing" for each dropped entry, as for an empty queue: ask again."""
    for _ in range(tries):
        try:
            return queue.get_nowait()
        except queue.Empty:
            continue
    raise AssertionError(f"no message after {tries} tries")


def test_the_entry_check_accepts_what_celery_writes_and_names_what_is_wrong_with_the_rest(redis_server):
    template = celery_written(redis_server.url, redis_server.client(), keys.TASK_EMBED_SHARD)
    assert entry_problem(json.dumps(template)) is None
    assert entry_problem(addressed(template, "q", "i", body=b"not json")) is None  # Celery's to refuse, not kombu's
    for kind, make in GARBAGE.items():
        entry, expected = make(template, "q", "i")
        if expected.startswith("dropped an entry"):
            assert f"({entry_problem(entry)})" in expected, kind
    wrong = {"delivery_tag": {"a": 1}, "delivery_info": None, "body_encoding": "rot13"}
    for field, value in wrong.items():
        message = copy.deepcopy(template)
        message["properties"][field] = value
        assert entry_problem(json.dumps(message)), field
    for field, value in {"headers": [], "body": {"a": 1}, "content-type": {"a": 1}}.items():
        assert entry_problem(json.dumps(dict(template, **{field: value}))), field
    assert entry_problem(b"\xff\xfe") == "not JSON"
    assert entry_problem('{"__type__": "datetime", "__value__": "not a date"}') == "not JSON"


def test_the_header_check_accepts_what_celery_writes_and_refuses_what_celery_would_choke_on(redis_server):
    headers = celery_written(redis_server.url, redis_server.client(), keys.TASK_EMBED_SHARD)["headers"]
    assert headers_problem(headers) is None
    assert headers_problem(dict(headers, timelimit=[3600, 3000.5])) is None
    wrong = {"task": ["a", "list"], "id": {"an": "object"}, "timelimit": "abc"}
    for field, value in wrong.items():
        assert headers_problem(dict(headers, **{field: value})), field
    for limits in ([1], [-1, None], [True, None], [float("inf"), None], [None, "60"]):
        assert headers_problem(dict(headers, timelimit=limits)), limits
    assert headers_problem({k: v for k, v in headers.items() if k != "id"}) == "no id header string"
    assert headers_problem({}) == "no task header string: not a Celery task message"  # protocol 1, or no task
