"""Message signing (QWEN3B_SIGNING_*, Celery's `auth` serializer): with it on, a worker runs only
task messages signed by a key whose certificate is in its cert store. Each test plays someone who
can write to Redis but holds no trusted key. Real worker processes, a private redis-server, key
pairs made by scripts/make_tls_certs.sh (or, for a forged certificate, by cryptography)."""

import base64
import datetime
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kombu.serialization import dumps, loads, registry

from common import keys
from common.celery_app import make_app, make_queue
from common.cluster_settings import differences, shared_settings
from common.dispatch import shard_message
from common.errors import ConfigError
from common.io.store import OutputStore
from common.model_identity import model_ref
from common.schemas import JobSpec
from common.settings import Settings, load_settings
from harness import cluster
from harness.outputs import commit_records
from producer.plan import plan_job
from tests.faults.conftest import SIM, committed_by, send_through_plain_celery, submit, wait_for
from tests.integration.conftest import assert_every_id_exactly_once, write_corpus

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tls_certs.sh"
SIGNING_VARIABLES = ("QWEN3B_SIGNING_KEY", "QWEN3B_SIGNING_CERT", "QWEN3B_SIGNING_CERT_STORE")
# No reconciler pass during a test: only the messages the test sends may reach the worker.
NO_RECONCILER = {"QWEN3B_RECONCILE_INTERVAL_S": "3600"}
FLOWER_AUTH = "admin:test"


def make_signing_pair(folder: Path) -> dict:
    """A key, its certificate and a cert store holding it, made by the script users run; as settings."""
    made = subprocess.run(["bash", str(SCRIPT), "--signing", str(folder)], check=False, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return {"QWEN3B_SIGNING_KEY": str(folder / "signing.key"), "QWEN3B_SIGNING_CERT": str(folder / "signing.crt"),
            "QWEN3B_SIGNING_CERT_STORE": str(folder / "signing-certs")}


def make_forged_pair(folder: Path, trusted_cert: str) -> dict:
    """A new key whose certificate copies the issuer, subject and serial number of a trusted one: the
    name Celery finds a signer's certificate by. Its store trusts itself, so the sender starts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    original = x509.load_pem_x509_certificate(Path(trusted_cert).read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(original.subject).issuer_name(original.issuer)
            .public_key(key.public_key()).serial_number(original.serial_number)
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (folder / "signing-certs").mkdir(parents=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "signing.key").write_bytes(pem)
    for path in (folder / "signing.crt", folder / "signing-certs" / "signing.crt"):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"QWEN3B_SIGNING_KEY": str(folder / "signing.key"), "QWEN3B_SIGNING_CERT": str(folder / "signing.crt"),
            "QWEN3B_SIGNING_CERT_STORE": str(folder / "signing-certs")}


@pytest.fixture
def cluster_key(tmp_path) -> dict:
    """The cluster's signing pair: every producer and worker of a test gets it."""
    return make_signing_pair(tmp_path / "signing")


def start_signing_worker(c, model, signing: dict, **env):
    [worker] = c.start_workers(1, model, backend="simulated", env={**SIM, **signing, **env})
    return worker


def plant_job(model, folder: Path):
    """A valid one-shard plan on disk (not registered in Redis, so no reconciler knows it) and the
    shard message a worker would run: what a legitimate producer would send."""
    write_corpus(folder / "c.jsonl", 50)
    store = OutputStore(folder / "out")
    spec = JobSpec(model=model_ref(str(model)), backend="simulated", dtype="fp32", shard_rows=100)
    plan, _ = plan_job(str(folder / "c.jsonl"), spec, store)
    assert plan.shards_total == 1
    message = shard_message(plan, str(store.root), plan.shard_at(0))
    return plan, store, message.model_dump()


def send_signed(url: str, queue: str, task: str, kwargs: dict, signing: dict) -> None:
    """Publish through our own app, signing with the given pair (in this test process)."""
    app = make_app(load_settings({"QWEN3B_BROKER_URL": url, **signing}))
    target = make_queue(queue)
    app.send_task(task, kwargs=kwargs, queue=target, declare=[target])
    app.close()


def dropped(c, queue: str) -> bool:
    """The message is gone: neither waiting in the queue nor delivered and unacknowledged."""
    client = c.redis.client()
    return not any(client.llen(name) for name in keys.queue_lists(queue)) and not client.hlen("unacked")


def test_with_signing_on_a_submitted_job_runs_to_the_end_with_every_id_exactly_once(local_cluster, tiny_embed_model,
                                                                                    tmp_path, cluster_key):
    # Given a worker and a producer that both sign with the cluster's key and trust its certificate
    start_signing_worker(local_cluster, tiny_embed_model, cluster_key)
    ids = write_corpus(tmp_path / "c.jsonl", 300)
    # When a job is submitted and followed to the end
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 100, "--wait",
                    env=cluster_key)
    # Then it finishes, every row exactly once, and no message was refused on the way
    assert result.returncode == 0, result.stdout + result.stderr + local_cluster.logs()
    assert_every_id_exactly_once(ids, tmp_path / "out")
    assert len(commit_records(tmp_path / "out")) == 3
    assert "Can't decode message body" not in local_cluster.logs()
    assert "Received invalid task message" not in local_cluster.logs()


def test_an_unsigned_message_from_a_plain_celery_client_is_dropped_and_never_runs(local_cluster, tiny_embed_model,
                                                                                  tmp_path, cluster_key):
    # Given a signing worker, and a shard message that a worker without signing would run
    worker = start_signing_worker(local_cluster, tiny_embed_model, cluster_key, **NO_RECONCILER)
    plan, store, message = plant_job(tiny_embed_model, tmp_path)
    # When it is sent unsigned, through a stock Celery client
    send_through_plain_celery(local_cluster.url, plan.queue, keys.TASK_EMBED_SHARD, message)
    # Then the worker refuses its content type before any of our code sees it, and drops it
    wait_for(lambda: "Refusing to deserialize untrusted content of type json" in worker.log(), 60, "the refusal")
    wait_for(lambda: dropped(local_cluster, plan.queue), 30, "the message being dropped")
    # ... and nothing ran: no delivery counted, no commit, no data
    assert "refused a shard message" not in worker.log()
    assert local_cluster.redis.client().hget(keys.job_attempts(plan.job_id), message["shard_id"]) is None
    assert not commit_records(store) and not (store.root / "data").exists()
    assert worker.alive()


@pytest.mark.parametrize("sender", ["own key", "forged certificate"])
def test_a_message_signed_by_a_key_the_workers_do_not_trust_is_dropped_while_the_trusted_key_runs_it(
        local_cluster, tiny_embed_model, tmp_path, cluster_key, sender):
    # Given a signing worker, and a shard message that it would run
    worker = start_signing_worker(local_cluster, tiny_embed_model, cluster_key, **NO_RECONCILER)
    plan, store, message = plant_job(tiny_embed_model, tmp_path)
    shard = message["shard_id"]
    if sender == "own key":  # a pair of its own, whose certificate the workers do not have
        rogue = make_signing_pair(tmp_path / "rogue")
    else:  # a new key whose certificate copies the trusted one's issuer and serial number
        rogue = make_forged_pair(tmp_path / "forged", cluster_key["QWEN3B_SIGNING_CERT"])
    # When it is sent signed by that key
    send_signed(local_cluster.url, plan.queue, keys.TASK_EMBED_SHARD, message, rogue)
    # Then the worker cannot verify the signature, and drops the message unrun: an unknown signer,
    # or (the forged certificate names the trusted one) a signature the trusted certificate does not verify
    wait_for(lambda: "Can't decode message body" in worker.log(), 60, "the refusal")
    assert "SecurityError" in worker.log()
    assert ("Unknown certificate" in worker.log()) == (sender == "own key"), worker.log()[-3000:]
    wait_for(lambda: dropped(local_cluster, plan.queue), 30, "the message being dropped")
    assert not commit_records(store)
    assert local_cluster.redis.client().hget(keys.job_attempts(plan.job_id), shard) is None
    # When the same message is sent signed by the cluster's key (this process now signs with it)
    send_signed(local_cluster.url, plan.queue, keys.TASK_EMBED_SHARD, message, cluster_key)
    # Then it runs, once: the refused copy was never delivered to the task
    wait_for(lambda: committed_by(store.root, shard), 120, "the commit of the trusted message")
    assert committed_by(store.root, shard) == worker.name
    assert worker.log().count("Task embed.shard[") == 2  # one delivery: "received", then "succeeded"


def test_remote_control_needs_a_signature_and_events_for_flower_stay_readable(local_cluster, tiny_embed_model,
                                                                              cluster_key):
    # Given a signing worker (it sends task and heartbeat events, and answers remote control)
    worker = start_signing_worker(local_cluster, tiny_embed_model, cluster_key, **NO_RECONCILER)
    signed = make_app(load_settings({"QWEN3B_BROKER_URL": local_cluster.url, **cluster_key}))
    plain = make_app(Settings(broker_url=local_cluster.url))
    # When a process with the cluster's key pings it (as Flower's inspect pages do), and one without
    # Then only the signed ping is answered
    replies = wait_for(lambda: signed.control.inspect(timeout=2).ping(), 30, "an answer to the signed ping")
    assert [name.endswith(worker.name) for name in replies] == [True], replies
    assert plain.control.inspect(timeout=2).ping() is None
    wait_for(lambda: "Refusing to deserialize untrusted content of type json" in worker.log(), 30,
             "the worker refusing the unsigned ping")
    # ... and the worker's events (JSON, unsigned) reach an event receiver of the signing app, as Flower's
    seen = []
    with signed.connection_for_read() as connection:
        receiver = signed.events.Receiver(connection, handlers={"*": seen.append})
        receiver.capture(limit=3, timeout=30)
    assert any(e["type"] == "worker-heartbeat" and e["hostname"].endswith(worker.name) for e in seen), seen
    signed.close()
    plain.close()


def flower_api(port: int, path: str):
    login = base64.b64encode(FLOWER_AUTH.encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def flower_answers(port: int) -> bool:
    try:
        return isinstance(flower_api(port, "/api/workers?refresh=false"), dict)
    except OSError:
        return False


def test_flower_with_the_cluster_key_shows_the_workers_and_every_task_of_a_signed_job(local_cluster, tiny_embed_model,
                                                                                     tmp_path, cluster_key):
    # Given a signing worker, and Flower started as the compose file starts it, with the cluster's key
    worker = start_signing_worker(local_cluster, tiny_embed_model, cluster_key)
    port = cluster.free_port()
    flower = cluster.start_cli(["celery", "-A", "common.monitor_app", "flower", f"--port={port}"], "flower",
                               local_cluster.url, local_cluster.logdir,
                               env={**cluster_key, "FLOWER_BASIC_AUTH": FLOWER_AUTH})
    try:
        wait_for(lambda: flower_answers(port), 60, "Flower answering")
        # When a signed job runs to the end
        write_corpus(tmp_path / "c.jsonl", 200)
        result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 100, "--wait",
                        env=cluster_key)
        assert result.returncode == 0, result.stdout + result.stderr
        # Then Flower's remote-control view of the worker works (signed commands, signed replies) ...
        def inspected():
            return [info for name, info in flower_api(port, "/api/workers?refresh=true").items()
                    if name.endswith(worker.name) and info.get("stats")]

        [info] = wait_for(inspected, 60, "Flower's inspect answer from the worker")
        assert keys.TASK_EMBED_SHARD in info["registered"]
        # ... and it saw both shard tasks succeed (events stay unsigned JSON)
        wait_for(lambda: len(flower_api(port, f"/api/tasks?taskname={keys.TASK_EMBED_SHARD}&state=SUCCESS")) == 2, 30,
                 "Flower seeing both tasks succeed")
    finally:
        flower.stop(timeout_s=5)


def test_a_worker_without_signing_refuses_to_join_a_cluster_that_signs(local_cluster, tiny_embed_model, cluster_key):
    # Given a signing worker, which registered the cluster's settings
    start_signing_worker(local_cluster, tiny_embed_model, cluster_key)
    # When a worker without the signing settings starts
    [unsigned] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env=SIM, wait=False)
    # Then it exits, naming the serializer it differs in
    wait_for(lambda: not unsigned.alive(), 120, "the unsigned worker exiting")
    assert "refuses to start" in unsigned.log(), unsigned.log()[-3000:]
    assert "task_serializer: this process 'json', cluster 'auth'" in unsigned.log()


@pytest.mark.parametrize("given", [
    ("QWEN3B_SIGNING_KEY",),
    ("QWEN3B_SIGNING_CERT", "QWEN3B_SIGNING_CERT_STORE"),
    ("QWEN3B_SIGNING_KEY", "QWEN3B_SIGNING_CERT"),
])
def test_a_partial_signing_configuration_is_a_config_error_naming_what_is_missing(cluster_key, given):
    # Given only some of the three signing settings
    env = {name: cluster_key[name] for name in given}
    # When the settings are loaded, Then it is an error naming the missing ones
    with pytest.raises(ConfigError, match="needs QWEN3B_SIGNING_KEY, QWEN3B_SIGNING_CERT and QWEN3B_SIGNING_CERT_STORE "
                                          "together") as error:
        load_settings(env)
    assert all(name in str(error.value).split("set,")[1] for name in SIGNING_VARIABLES if name not in given)


def test_a_partial_signing_configuration_stops_the_producer_with_the_error(local_cluster, cluster_key):
    # Given a producer with the key but not the certificate or the store
    result = local_cluster.producer("jobs", env={"QWEN3B_SIGNING_KEY": cluster_key["QWEN3B_SIGNING_KEY"]})
    # Then it stops at once with the error, not a traceback
    assert result.returncode == 2, result.stdout + result.stderr
    assert "QWEN3B_SIGNING_CERT, QWEN3B_SIGNING_CERT_STORE not set" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("variable, path, message", [
    ("QWEN3B_SIGNING_KEY", "missing.key", "no such file"),
    ("QWEN3B_SIGNING_CERT_STORE", "missing-certs", "no such folder"),
])
def test_a_signing_file_that_does_not_exist_is_a_config_error(cluster_key, tmp_path, variable, path, message):
    with pytest.raises(ConfigError, match=f"{variable}=.*{message}"):
        load_settings({**cluster_key, variable: str(tmp_path / path)})


def test_a_key_that_does_not_belong_to_the_certificate_is_a_config_error(cluster_key, tmp_path):
    # Given the cluster's certificate and store, with another pair's key
    other = make_signing_pair(tmp_path / "other")
    settings = load_settings({**cluster_key, "QWEN3B_SIGNING_KEY": other["QWEN3B_SIGNING_KEY"]})
    # When the app is made, Then the mismatch is named before any message is sent
    with pytest.raises(ConfigError, match="does not belong to"):
        make_app(settings)


def test_an_ec_key_like_the_tls_ones_is_a_config_error_saying_rsa(cluster_key, tmp_path):
    # Given the broker's TLS key pair (EC) offered as the signing pair
    made = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "tls"), "redis"], check=False, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    settings = load_settings({**cluster_key, "QWEN3B_SIGNING_KEY": str(tmp_path / "tls" / "redis.key")})
    # Then the error says what is needed
    with pytest.raises(ConfigError, match="RSA"):
        make_app(settings)


def test_signing_needs_cryptography_and_says_how_to_install_it(cluster_key, monkeypatch):
    # Given a Python without the cryptography package
    for name in list(sys.modules):
        if name == "cryptography" or name.startswith(("cryptography.", "celery.security")):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    # When a signing app is made, Then the error names the package and the extra
    with pytest.raises(ConfigError, match=r"needs the cryptography package: pip install 'qwen3-batch\[signing\]'"):
        make_app(load_settings(cluster_key))


def test_signing_apps_leave_kombu_usable_for_apps_without_signing_in_the_same_process(cluster_key, tmp_path):
    # Given a process that builds signing apps with two identities, then one without signing
    make_app(load_settings(make_signing_pair(tmp_path / "first")))
    signed = make_app(load_settings(cluster_key))
    plain = make_app(Settings())
    # Then the signing app signs and refuses json; the plain one is untouched
    assert (signed.conf.task_serializer, signed.conf.accept_content) == ("auth", ["auth"])
    assert (plain.conf.task_serializer, plain.conf.accept_content) == ("json", ["json"])
    content_type, encoding, body = dumps({"shard": 1}, serializer="auth")
    assert content_type == "application/data" and b'"shard"' not in body.encode()
    assert loads(body, content_type, encoding, accept={"application/data"}) == {"shard": 1}
    # ... kombu's default serializer is still json, and json still decodes for consumers that name no
    # accepted types (Celery's own setup_security would have disabled it for the whole process)
    assert registry._default_content_type == "application/json"
    content_type, encoding, body = dumps({"a": 1}, serializer="json")
    assert loads(body, content_type, encoding, accept=None) == {"a": 1}


def test_signing_is_a_cluster_wide_setting_that_survives_the_json_round_trip(cluster_key):
    # Given the shared settings of a signing process and of one without signing
    signing, plain = shared_settings(load_settings(cluster_key)), shared_settings(Settings())
    # Then they compare equal to themselves after JSON, and differ exactly in the serializer settings
    assert differences(signing, signing) == []
    assert [line.split(":")[0] for line in differences(signing, plain)] == ["accept_content", "task_serializer"]
