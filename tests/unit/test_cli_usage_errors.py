"""Every usage error of both CLIs is a message naming what is wrong and exit 2, never a traceback,
whatever typer or click version is installed (issue 16). The commands are found by walking the CLIs
themselves, so a new command or option is covered the day it is added.

Usage errors are found while parsing, before a command's body runs; to be sure of that, and to keep a
random argument list from starting a worker, every body is replaced by a stand-in here (`stand_ins`)
that fails the test if reached, or raises what the property test tells it to."""

import functools
import inspect
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import cli_runner
from common.errors import ConfigError, Qwen3BatchError
from producer.cli import app as producer_app
from workers.cli import app as workers_app

ROOT = Path(__file__).resolve().parents[2]
CLIS = {"producer": producer_app, "workers": workers_app}
SHELL_CHANGING = ("--install-completion", "--show-completion")  # they write to the user's shell rc files


def leaves(command, path=()):
    """(path, click command) of every runnable command under a group."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from leaves(sub, (*path, name))
    else:
        yield path, command


def groups(command, path=()):
    if hasattr(command, "commands"):
        yield path
        for name, sub in command.commands.items():
            yield from groups(sub, (*path, name))


def all_commands():
    for prog, app in CLIS.items():
        for path, command in leaves(typer.main.get_command(app)):
            yield pytest.param(prog, path, command, id=" ".join((prog, *path)))


def python_type(command, param) -> type:
    """The annotation of the function parameter behind a CLI parameter (typer's public contract)."""
    return inspect.signature(command.callback).parameters[param.name].annotation


def value_for(command, param) -> str:
    return "1" if python_type(command, param) in (int, float) else "x"


def required_args(command, leave_out=None) -> list[str]:
    args: list[str] = []
    for param in command.params:
        if not param.required or param is leave_out:
            continue
        args += [value_for(command, param)] if param.param_type_name == "argument" else \
            [param.opts[0], value_for(command, param)]
    return args


def registered_commands(app: typer.Typer):
    yield from app.registered_commands
    for group in app.registered_groups:
        yield from registered_commands(group.typer_instance)


@pytest.fixture
def stand_ins(monkeypatch):
    """Every command body replaced by `body` (default: a failure, since no body should run)."""
    behaviour = {"raise": AssertionError("a command body ran: the arguments were not a usage error")}

    def wrap(callback):
        @functools.wraps(callback)  # typer reads the parameters through __wrapped__
        def body(*args, **kwargs):
            if behaviour["raise"] is not None:
                raise behaviour["raise"]

        return body

    for app in CLIS.values():
        for info in registered_commands(app):
            monkeypatch.setattr(info, "callback", wrap(info.callback))
    monkeypatch.setenv("COLUMNS", "300")  # typer's error box must not wrap an option's name
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv(cli_runner.DEBUG_ENV, raising=False)
    return behaviour


def invoke(capsys, prog: str, args: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ended:
        cli_runner.run(CLIS[prog], prog, args)
    captured = capsys.readouterr()
    code = ended.value.code
    return (0 if code is None else code), captured.out + captured.err


def assert_usage_error(code: int, output: str, *names: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    for name in names:
        assert name in output, f"{name!r} not named in:\n{output}"


@pytest.mark.parametrize("prog, path, command", list(all_commands()))
def test_an_unknown_option_is_named_and_exits_2(stand_ins, capsys, prog, path, command):
    code, output = invoke(capsys, prog, [*path, *required_args(command), "--no-such-option"])
    assert_usage_error(code, output, "--no-such-option")


@pytest.mark.parametrize("prog, path, command", list(all_commands()))
def test_each_missing_required_parameter_is_named_and_exits_2(stand_ins, capsys, prog, path, command):
    required = [p for p in command.params if p.required]
    for param in required:
        code, output = invoke(capsys, prog, [*path, *required_args(command, leave_out=param)])
        shown = param.opts[0] if param.param_type_name == "option" else (param.metavar or param.name.upper())
        assert_usage_error(code, output, shown)


@pytest.mark.parametrize("prog, path, command", list(all_commands()))
def test_a_value_of_the_wrong_type_is_named_and_exits_2(stand_ins, capsys, prog, path, command):
    typed = [p for p in command.params if p.param_type_name == "option" and not getattr(p, "is_flag", False)
             and python_type(command, p) in (int, float)]
    for param in typed:
        code, output = invoke(capsys, prog, [*path, *required_args(command, leave_out=param), param.opts[0], "abc"])
        assert_usage_error(code, output, param.opts[0])


@pytest.mark.parametrize("prog, prefix", [(prog, path) for prog, app in CLIS.items()
                                          for path in groups(typer.main.get_command(app))])
def test_an_unknown_command_is_named_and_exits_2(stand_ins, capsys, prog, prefix):
    code, output = invoke(capsys, prog, [*prefix, "nosuchcmd"])
    assert_usage_error(code, output, "nosuchcmd")


def test_the_commands_a_new_user_tried_are_one_message_each_from_the_real_entry_points(tmp_path):
    """The table of issue 16, through `python -m producer` as a user runs it (real command bodies)."""
    (tmp_path / "x.jsonl").write_text('{"id": 1, "text": "a"}\n')
    cases = [(["producer", "submit"], "INPUTS"),
             (["producer", "submit", "x.jsonl", "--model", "m", "--out", "o", "--keep-column", "a"], "--keep-column"),
             (["producer", "submit", "x.jsonl", "--model", "m", "--out", "o", "--shard-rows", "abc"], "--shard-rows"),
             (["producer", "nosuchcmd"], "nosuchcmd"),
             (["producer", "status"], "JOB"),
             (["workers", "start", "--bogus"], "--bogus")]
    for (prog, *args), name in cases:
        done = subprocess.run([sys.executable, "-m", prog, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "300", "PYTHONPATH": str(ROOT)})
        assert_usage_error(done.returncode, done.stdout + done.stderr, name)


def validation_error() -> pydantic.ValidationError:
    class Options(pydantic.BaseModel):
        shard_rows: int

    try:
        Options(shard_rows="many")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def tokens() -> list[str]:
    """Words a user might type: every command name and option of both CLIs, and some values."""
    words = {"1", "0", "-1", "abc", "x.jsonl", "--", "-", "-x", "--debug", "--help", ""}
    for app in CLIS.values():
        for path, command in leaves(typer.main.get_command(app)):
            words.update(path)
            for param in command.params:
                words.update(o for o in param.opts if o.startswith("-") and o not in SHELL_CHANGING)
    return sorted(words)


BODY_OUTCOMES = [None, ConfigError("a project error"), Qwen3BatchError("another"), ValueError("a bug"),
                 RuntimeError("a bug"), KeyboardInterrupt(), "validation"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prog=st.sampled_from(sorted(CLIS)), args=st.lists(st.sampled_from(tokens()) | st.text(max_size=8), max_size=7),
       outcome=st.sampled_from(BODY_OUTCOMES))
def test_no_argument_list_ends_in_a_traceback(stand_ins, capsys, prog, args, outcome):
    if any(a in SHELL_CHANGING for a in args):
        return
    stand_ins["raise"] = validation_error() if outcome == "validation" else outcome
    code, output = invoke(capsys, prog, args)
    assert "Traceback" not in output, (args, output)
    assert code in (0, 1, 2, 130), (args, code, output)
    if code == 1:  # only an unexpected error of a body: one line that says how to see the rest
        assert "--debug" in output, output


@pytest.mark.parametrize("prog, args, named", [
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--task", "nosuch"], "--task"),
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--dtype", "nosuch"], "--dtype"),
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--backend", "nosuch"], "--backend"),
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--device", "gpu0"], "--device"),
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--output-dtype", "f8"],
     "--output-dtype"),
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--shard-rows", "0"], "--shard-rows"),
    ("producer", ["submit", "IN", "--model", "MODEL", "--out", "OUT", "--local", "--seqlens", "a,b"], "--seqlens"),
    ("workers", ["start", "--model", "MODEL", "--task", "nosuch"], "--task"),
    ("workers", ["start", "--model", "MODEL", "--backend", "nosuch"], "--backend"),
    ("workers", ["start", "--model", "MODEL", "--dtype", "nosuch"], "--dtype"),
    ("workers", ["start", "--model", "MODEL", "--device", "gpu0"], "--device"),
    ("workers", ["start", "--model", "MODEL", "--pool", "threads"], "--pool"),
    ("workers", ["start", "--model", "MODEL", "--loglevel", "loud"], "--loglevel"),
])
def test_a_value_outside_its_choices_is_named_and_exits_2_before_any_work(capsys, monkeypatch, tmp_path,
                                                                          tiny_embed_model, prog, args, named):
    # Real command bodies, no broker reachable: the option must be refused before anything waits or runs
    monkeypatch.setenv("QWEN3B_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.jsonl").write_text('{"id": 1, "text": "a"}\n')
    replace = {"IN": "c.jsonl", "MODEL": str(tiny_embed_model), "OUT": "out"}
    code, output = invoke(capsys, prog, [replace.get(a, a) for a in args])
    assert_usage_error(code, output, named)
    assert not (tmp_path / "out").exists()
