"""Help text a user can act on (issue 12): no raw type names, every default shown, the valid
backends listed, the environment variables named, and the dtype/backend rule said."""

import re

import pytest
from typer.testing import CliRunner

from producer.cli import app as producer_app
from workers.cli import app as workers_app

RAW_TYPES = re.compile(r"<(str|bool|int|float)>")


def help_of(app, *command) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("app, command", [
    (producer_app, ()), *[(producer_app, (c,)) for c in ("submit", "wait", "status", "resume", "cancel", "jobs",
                                                           "workers", "cluster-settings", "compile")],
    (workers_app, ()), *[(workers_app, (c,)) for c in ("start", "health", "build-model", "bench")],
    *[(workers_app, ("eval", c)) for c in ("sts", "rerank", "agree", "dataset")],
])
def test_no_help_page_shows_a_raw_type_name(app, command):
    assert not RAW_TYPES.search(help_of(app, *command)), help_of(app, *command)


def test_submit_help_shows_every_default_the_backends_the_environment_and_the_dtype_rule():
    text = " ".join(help_of(producer_app, "submit").split())
    for shown in ("[default: embed]", "[default: 64,128,256,512]", "[default: auto]", "[default: torch]",
                  "[default: 10000]", "[default: float32]", "[default: cpu]",
                  "Given a web search query, retrieve relevant passages that answer the query",  # the instructions
                  "default: the hidden size",  # --dim
                  "torch | onnx | vacc | simulated",
                  "Workers serve one dtype and backend each, and a job waits for workers of its own"):
        assert shown in text, shown
    assert "QWEN3B_BROKER_URL" in " ".join(help_of(producer_app).split())
    assert "QWEN3B_BROKER_URL" in " ".join(help_of(workers_app, "start").split())
