"""docker-compose.yml's topology as plain processes: its Redis command line, two of its per-card
worker services, its compile worker and its Flower, then a job through them.

This machine has no cards, so the card workers run the simulated backend (real tokenising,
batching, Parquet and commits) with everything else as the compose file writes it, the
container paths (/data/out, ...) mapped onto a temporary folder.
"""

import ast
import base64
import json
import time
import urllib.request

import pytest

from common import keys
from tests.cluster.conftest import SIMULATED, compose_env, on_this_machine
from tests.integration.conftest import assert_every_id_exactly_once, write_corpus
from harness import cluster, compose

pytestmark = pytest.mark.slow


def local_environment(spec: dict, service: str, redis_url: str, tmp_path) -> dict:
    """The service's environment with the compose network's broker and the container folders
    replaced by this machine's."""
    env = {k: v for k, v in compose.service(spec, service)["environment"].items() if v != ""}
    env = {k: v.replace("/data/", f"{tmp_path}/data/") for k, v in env.items() if not v.startswith("/models")}
    return dict(env, QWEN3B_BROKER_URL=redis_url)


def start_service(spec, service, argv, redis_url, tmp_path, extra_env=None) -> cluster.Worker:
    env = {**local_environment(spec, service, redis_url, tmp_path), **SIMULATED, **(extra_env or {})}
    (tmp_path / "data" / "out").mkdir(parents=True, exist_ok=True)  # the compose file's mounted volume
    name = compose.option(argv, "--name") or service
    return cluster.start_cli(argv, name, redis_url, tmp_path / "logs", env=env)


def flower_api(port: int, path: str, auth: str):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_for(condition, timeout_s: float, what):
    """condition()'s first truthy value; on timeout an error saying what (a callable: read then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(what() if callable(what) else what)


def test_the_compose_topology_runs_a_job_on_its_card_workers_and_flower_sees_every_task(
        compose_redis, processes, tiny_embed_model, tmp_path):
    # Given Redis from the compose file, two of its VACC worker services (pinned to vacc:0 and
    # vacc:1), its compile worker, and Flower, each started with the compose file's command line
    env = compose_env(tiny_embed_model)
    spec = compose.load_compose(env=env)
    url = compose_redis.url
    card_workers = compose.worker_services(spec, "vacc")[:2]
    for service in card_workers:
        processes.append(start_service(spec, service, on_this_machine(compose.command(spec, service)), url, tmp_path))
    processes.append(start_service(spec, "compile", compose.command(spec, "compile"), url, tmp_path))
    flower_port = cluster.free_port()
    flower_argv = [f"--port={flower_port}" if a.startswith("--port=") else a for a in compose.command(spec, "flower")]
    processes.append(start_service(spec, "flower", flower_argv, url, tmp_path,
                                   {"FLOWER_BASIC_AUTH": env["QWEN3B_FLOWER_AUTH"]}))
    cluster.wait_for_workers(compose_redis.client(), processes[:3])
    auth = env["QWEN3B_FLOWER_AUTH"]
    wait_for(lambda: _flower_up(flower_port, auth), 60, lambda: "Flower did not answer:\n" + processes[3].log()[-3000:])

    # When a job is submitted from the producer service's environment and followed to the end
    (tmp_path / "data" / "in").mkdir(parents=True)
    ids = write_corpus(tmp_path / "data" / "in" / "corpus.jsonl", 800)
    producer_env = local_environment(spec, "producer", url, tmp_path)
    done = cluster.run_cli("producer", ["submit", str(tmp_path / "data" / "in" / "corpus.jsonl"), "--model",
                                        str(tiny_embed_model), "--out", "corpus-emb", "--backend", "simulated",
                                        "--dtype", "fp16", "--shard-rows", "100", "--wait"], url, 300, producer_env)

    # Then every row is in the shared output store exactly once, written by both card workers
    logs = "\n".join(p.log()[-3000:] for p in processes)
    assert done.returncode == 0, done.stderr + logs
    out = tmp_path / "data" / "out" / "corpus-emb"
    assert_every_id_exactly_once(ids, out)
    writers = {json.loads(p.read_text())["worker"] for p in (out / "_commits").glob("*.json")}
    names = {compose.option(compose.command(spec, s), "--name") for s in card_workers}
    assert writers == names
    # ... each worker reports its device, and the compose healthcheck of each passes
    client = compose_redis.client()
    devices = {cluster.heartbeat(client, n)["device"] for n in names}
    assert devices == {compose.option(compose.command(spec, s), "--device") for s in card_workers} == {"vacc:0",
                                                                                                      "vacc:1"}
    for service in [*card_workers, "compile"]:
        check = compose.service(spec, service)["healthcheck"]["test"][1:]
        healthy = cluster.run_cli(check[0], check[1:], url, 60, producer_env)
        assert healthy.returncode == 0, healthy.stderr
    # ... `producer workers` lists them with host, device and throughput
    listed = cluster.run_cli("producer", ["workers"], url, 60, {**producer_env, "COLUMNS": "200"})
    assert listed.returncode == 0 and all(n in listed.stdout for n in names), listed.stdout + listed.stderr
    assert "vacc:0" in listed.stdout and "compile@testhost" in listed.stdout
    # ... and Flower saw every shard task from sent to succeeded
    shards = {p.stem for p in (out / "_commits").glob("*.json")}
    tasks = wait_for(lambda: _succeeded(flower_port, auth, len(shards)), 30, "Flower did not see every task")
    assert {t["kwargs_shard"] for t in tasks} == shards
    assert all(t["sent"] and t["received"] and t["started"] for t in tasks)
    assert client.get(keys.cluster_settings())  # the first worker registered the cluster's settings


def _flower_up(port: int, auth: str) -> bool:
    try:
        return isinstance(flower_api(port, "/api/workers?refresh=false", auth), dict)
    except OSError:
        return False


def _succeeded(port: int, auth: str, expected: int) -> list | None:
    tasks = flower_api(port, f"/api/tasks?taskname={keys.TASK_EMBED_SHARD}&state=SUCCESS&limit=1000", auth).values()
    found = [dict(kwargs_shard=_shard_of(t), sent=t.get("sent"), received=t.get("received"), started=t.get("started"))
             for t in tasks]
    return found if len(found) >= expected else None


def _shard_of(task: dict) -> str:
    return ast.literal_eval(task["kwargs"])["shard_id"] if task.get("kwargs") else ""
