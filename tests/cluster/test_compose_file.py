"""docker-compose.yml, its TLS override, the Dockerfile and .env.example hold what the README promises.

No Docker daemon is needed: the files are read the way `docker compose` reads them (harness/compose.py).
tests/cluster/test_compose_topology.py then runs the same command lines as processes.
"""

import re
from dataclasses import fields

import pytest
import yaml

from common import defaults
from common.errors import ConfigError
from common.settings import ENV_PREFIX, Settings
from tests.cluster.conftest import compose_env
from harness import compose

REPO = compose.REPO_ROOT


ENV = compose_env()


@pytest.fixture(scope="module")
def spec() -> dict:
    return compose.load_compose(env=ENV)


def redis_config(argv: list[str]) -> dict:
    """`redis-server --name value ...` -> {name: value}; a later option wins, as in redis-server."""
    assert argv[0] == "redis-server"
    return {argv[i][2:]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}


def test_redis_is_configured_as_a_broker_persistent_never_evicting_with_a_password(spec):
    config = redis_config(compose.command(spec, "redis"))
    assert config["appendonly"] == "yes"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["maxmemory"]  # a cap, so a full Redis refuses writes instead of the host swapping
    assert config["requirepass"] == ENV["QWEN3B_REDIS_PASSWORD"]


def test_the_redis_password_is_required_and_stays_off_command_lines_in_the_healthcheck(spec):
    env = dict(ENV)
    del env["QWEN3B_REDIS_PASSWORD"]
    with pytest.raises(ConfigError, match="QWEN3B_REDIS_PASSWORD"):
        compose.load_compose(env=env)
    redis = compose.service(spec, "redis")
    assert redis["environment"]["REDISCLI_AUTH"] == redis_config(redis["command"])["requirepass"]
    assert "-a" not in " ".join(redis["healthcheck"]["test"]).split()


def test_redis_publishes_no_port_by_default_and_the_tls_override_publishes_only_its_tls_port(spec):
    assert "ports" not in compose.service(spec, "redis")
    override = compose.load_compose(compose.TLS_OVERRIDE_FILE, env=ENV)
    tls = compose.service(override, "redis")
    config = redis_config(tls["command"])
    assert config["port"] == "0"  # nothing unencrypted
    assert [p.rsplit(":", 1)[-1] for p in tls["ports"]] == [config["tls-port"]]
    # The override replaces the whole command: the broker settings must still be there.
    base = redis_config(compose.command(spec, "redis"))
    assert {k: config[k] for k in base} == base
    assert "--tls" in tls["healthcheck"]["test"][1]


def test_every_card_has_its_own_worker_service_with_its_device_passed_through(spec):
    cuda = compose.worker_services(spec, "cuda")
    vacc = compose.worker_services(spec, "vacc")
    assert len(cuda) >= 2 and len(vacc) >= 2
    reserved = []
    for name in cuda:
        service = compose.service(spec, name)
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        reserved += device["device_ids"]
        # The reservation shows the container one card, as cuda:0; the name carries the host's number.
        assert compose.option(service["command"], "--device") == "cuda:0"
        assert f"gpu{device['device_ids'][0]}@" in compose.option(service["command"], "--name")
    assert len(reserved) == len(set(reserved)) == len(cuda)
    for name in vacc:
        service = compose.service(spec, name)
        index = compose.option(service["command"], "--device").removeprefix("vacc:")
        assert service["devices"] == [f"/dev/vacc{index}:/dev/vacc{index}"]
        assert compose.option(service["command"], "--backend") == "vacc"
        assert any(v.endswith(":/opt/vastai:ro") for v in service["volumes"])  # the vendor runtime, read-only


def test_every_worker_has_a_unique_name_and_a_healthcheck_on_that_name(spec):
    workers = compose.worker_services(spec)
    names = [compose.option(compose.command(spec, w), "--name") for w in workers]
    assert len(set(names)) == len(names) == len(workers)
    for service, name in zip(workers, names):
        check = compose.service(spec, service)["healthcheck"]
        assert check["test"] == ["CMD", "workers", "health", "--name", name]
        assert check["start_period"]  # a real model takes minutes to load


def test_the_compile_worker_runs_workers_start_compile(spec):
    assert compose.command(spec, "compile")[:3] == ["workers", "start", "--compile"]


def test_workers_get_time_to_requeue_on_docker_stop_and_share_the_output_store(spec):
    grace_s = int(re.fullmatch(r"(\d+)s", compose.service(spec, "worker-cpu")["stop_grace_period"]).group(1))
    assert grace_s > defaults.DEFAULT_SOFT_SHUTDOWN_TIMEOUT_S
    for name in compose.worker_services(spec):
        service = compose.service(spec, name)
        assert service["environment"]["QWEN3B_OUTPUT_ROOT"] == "/data/out"
        assert any(v.endswith(":/data/out") for v in service["volumes"])
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_runs_with_the_cluster_settings_behind_a_login_on_localhost_only(spec):
    flower = compose.service(spec, "flower")
    assert flower["command"][:4] == ["celery", "-A", "common.monitor_app", "flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("admin:")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
    assert "healthcheck" in flower["healthcheck"]["test"][-1]


def test_every_setting_of_the_settings_object_reaches_every_service(spec):
    names = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    for service in ["flower", "producer", *compose.worker_services(spec)]:
        assert names <= set(compose.service(spec, service)["environment"]), service


def test_env_example_documents_every_setting_and_every_variable_the_compose_files_use():
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    used = set()
    for path in (compose.COMPOSE_FILE, *compose.OVERRIDE_FILES):
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        used |= set(re.findall(r"^\s+([A-Z][A-Z0-9_]+):\s*(?:#.*)?$", text, flags=re.M))  # passed through
    settings = {ENV_PREFIX + f.name.upper() for f in fields(Settings)} - {"QWEN3B_ARTIFACT_STORE"}  # fixed in compose
    assert not used - documented, f"used in the compose files, missing from .env.example: {used - documented}"
    assert not settings - documented, f"settings missing from .env.example: {settings - documented}"


def test_the_image_installs_cpu_torch_by_default_and_a_build_arg_switches_to_cuda(spec):
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, flags=re.M)
    assert "${TORCH_INDEX}/${TORCH_VARIANT}" in dockerfile
    assert compose.service(spec, "worker-cuda0")["build"]["args"]["TORCH_VARIANT"] == "cpu"
    cuda = compose.load_compose(env=dict(ENV, QWEN3B_TORCH_VARIANT="cu128"))
    assert compose.service(cuda, "worker-cuda0")["build"]["args"]["TORCH_VARIANT"] == "cu128"


def test_the_compose_files_are_plain_yaml_with_list_commands():
    for path in (compose.COMPOSE_FILE, *compose.OVERRIDE_FILES):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name, service in raw["services"].items():
            assert isinstance(service.get("command", []), list), f"{path.name}: {name}"


def test_the_s3_override_points_every_service_at_the_bucket_and_passes_the_aws_chain_through(spec):
    env = dict(ENV, QWEN3B_S3_OUTPUT_ROOT="s3://vectors/jobs/", QWEN3B_S3_INPUT_ROOTS="s3://corpora/,/models",
               QWEN3B_S3_ARTIFACT_STORE="s3://vectors/artifacts")
    override = compose.load_compose(compose.S3_OVERRIDE_FILE, env=env)
    for name in ["producer", "compile", *compose.worker_services(spec)]:
        environment = compose.service(override, name)["environment"]
        assert environment["QWEN3B_OUTPUT_ROOT"] == "s3://vectors/jobs/", name
        assert environment["QWEN3B_ARTIFACT_STORE"] == "s3://vectors/artifacts", name
        # no value: compose passes the host's variable through, or leaves it unset for a role to answer
        assert all(environment[v] is None for v in ("AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_PROFILE")), name


def test_the_s3_override_refuses_to_start_without_its_bucket_settings():
    with pytest.raises(ConfigError, match="QWEN3B_S3_OUTPUT_ROOT"):
        compose.load_compose(compose.S3_OVERRIDE_FILE, env=ENV)
