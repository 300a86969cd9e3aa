"""The settings object: one prefix, TLS options folded into the broker URL with certificate checks
on, passwords never shown, the output root enforced; and compose-style interpolation."""

import ssl

import pytest

from common.broker import redact_url
from common.celery_app import make_app
from common.errors import ConfigError
from common.settings import load_settings
from harness import compose


def test_tls_files_are_folded_into_a_rediss_url_with_certificate_checks_on(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    settings = load_settings({"QWEN3B_BROKER_URL": "rediss://:pw@broker.example:6380/0",
                              "QWEN3B_BROKER_TLS_CA_FILE": str(ca)})
    assert settings.broker_url == f"rediss://:pw@broker.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    assert load_settings({"QWEN3B_BROKER_URL": settings.broker_url}).broker_url == settings.broker_url  # idempotent
    tls = make_app(settings).conf.broker_use_ssl
    assert tls == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}


def test_a_bare_rediss_url_still_checks_certificates_and_redis_urls_use_no_tls():
    assert load_settings({"QWEN3B_BROKER_URL": "rediss://h:6380/0"}).broker_url.endswith("?ssl_cert_reqs=required")
    assert make_app(load_settings({"QWEN3B_BROKER_URL": "redis://h:6379/0"})).conf.broker_use_ssl is None


@pytest.mark.parametrize("env, message", [
    ({"QWEN3B_BROKER_URL": "redis://h/0", "QWEN3B_BROKER_TLS_CA_FILE": "/etc/hostname"}, "need a rediss:// broker URL"),
    ({"QWEN3B_BROKER_URL": "rediss://h/0", "QWEN3B_BROKER_TLS_CA_FILE": "/no/such/ca.crt"},
     "QWEN3B_BROKER_TLS_CA_FILE=/no/such/ca.crt: no such file"),
    ({"QWEN3B_BROKER_URL": "amqp://h/"}, "must start with redis:// or rediss://"),
    ({"QWEN3B_VISIBILITY_TIMEOUT_S": "100", "QWEN3B_TASK_TIME_LIMIT_S": "100"}, "at least twice"),
    ({"QWEN3B_VISIBILITY_TIMEOUT_S": "199", "QWEN3B_TASK_TIME_LIMIT_S": "100",
      "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "90"}, "at least twice"),
])
def test_bad_broker_settings_are_errors_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_empty_variables_mean_the_default_as_docker_compose_passes_unset_ones():
    assert load_settings({"QWEN3B_TASK_TIME_LIMIT_S": "", "QWEN3B_BROKER_URL": ""}) == load_settings({})


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://user:s3cret@h:6380/1?ssl_ca_certs=/tls/ca.crt", "rediss://user:***@h:6380/1"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_broker_urls_are_shown_without_their_password(url, shown):
    assert redact_url(url) == shown


def test_a_relative_output_goes_under_the_output_root_and_nothing_may_leave_it(tmp_path):
    settings = load_settings({"QWEN3B_OUTPUT_ROOT": str(tmp_path)})
    assert settings.output_location("corpus-emb") == str(tmp_path / "corpus-emb")
    assert settings.output_location(str(tmp_path / "a")) == str(tmp_path / "a")
    for escape in ("../elsewhere", "/etc/out", str(tmp_path)):
        with pytest.raises(ConfigError, match="outside QWEN3B_OUTPUT_ROOT"):
            settings.output_location(escape)
    assert load_settings({}).output_location("../anywhere") == "../anywhere"  # no root: no rule


def test_a_worker_with_no_roots_set_accepts_only_its_start_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.worker_output_root == str(tmp_path) and settings.worker_input_roots == (str(tmp_path),)
    roots = load_settings({"QWEN3B_OUTPUT_ROOT": "/data/out", "QWEN3B_INPUT_ROOTS": "/data/in, /models"})
    assert roots.worker_output_root == "/data/out" and roots.worker_input_roots == ("/data/in", "/models")


@pytest.mark.parametrize("text, expected", [
    ("${A}", "a"), ("$A-x", "a-x"), ("${NONE:-d}", "d"), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""),
    ("${NONE:-x${A}y}", "xay"), ("$$HOME", "$HOME"), ("${A:+set}", "set"), ("${NONE:+set}", ""),
])
def test_compose_interpolation_reads_variables_as_docker_compose_does(text, expected):
    assert compose.interpolate(text, {"A": "a", "EMPTY": ""}) == expected


def test_a_required_compose_variable_that_is_missing_is_an_error_with_its_message():
    with pytest.raises(ConfigError, match="PW: set PW in .env"):
        compose.interpolate("${PW:?set PW in .env}", {})
