"""How both CLIs (producer, workers) run and end, the same way under any typer or click version:
  - usage errors (a missing argument, an unknown option or command, a bad type or choice) are
    typer's own: its message naming the option, exit 2 (its standalone mode does this);
  - the project's own errors (Qwen3BatchError, an invalid option value) are one line, exit 2;
  - anything unexpected is one line that names --debug, exit 1; the traceback only with
    --debug (anywhere on the command line) or QWEN3B_DEBUG=1.
No private class of typer or click is caught here: only what the project raises, and Exception.

`main` is what a CLI process runs: `run` plus two start-up savings that only a whole process may
make (tests call `run` in their own process)."""

import gc
import os
import sys

import pydantic
import typer

from common.errors import Qwen3BatchError

DEBUG_FLAG, DEBUG_ENV = "--debug", "QWEN3B_DEBUG"
EXIT_USAGE, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 2, 1, 130


def main(app: typer.Typer, prog: str) -> None:
    """A CLI process from start to exit. scripts/bench_cli_start.py measures what the two savings
    are worth, side by side with `run` alone: `producer --help` builds no Arrow array, so its
    saving is the collector's alone; `producer submit` has both."""
    if "pyarrow" in sys.modules:  # a command that never touches Arrow (`workers health`) does not import it
        skip_pandas_probe()
    gc.freeze()  # the import-time objects live as long as the process: no collection walks them again
    try:
        run(app, prog)
    finally:
        gc.freeze()  # nor at exit: interpreter shutdown would otherwise collect everything once more


def skip_pandas_probe() -> None:
    """pyarrow imports pandas (60 MB, half a second) the first time it builds an array, only to ask
    whether the input is a pandas object; this project never passes one. Called by the CLIs' main
    and by a shard worker's boot (its pool child imports pyarrow after main ran). The probe runs
    once, with pandas hidden, and pyarrow remembers the answer. pandas stays importable: pyarrow
    imports it when a conversion needs it (to_pandas), and so can anyone else."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    hide = _HidePandas()
    sys.meta_path.insert(0, hide)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(hide)


class _HidePandas:
    """A meta path finder under which `import pandas` fails as if it were not installed (a None in
    sys.modules would not do: pyarrow's compiled import takes it for the module)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden from pyarrow's probe)", name=name)
        return None


def run(app: typer.Typer, prog: str, argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        app(args=args, prog_name=prog)  # standalone mode: exits itself, usage errors included
    except Qwen3BatchError as exc:
        fail(f"error: {exc}", EXIT_USAGE)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{option_name(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        fail(f"error: invalid option: {problems}", EXIT_USAGE)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug, or an error nobody anticipated: one line, the traceback on request
        if debug:
            raise
        fail(f"error: unexpected {type(exc).__name__}: {exc}\n(a bug? Run the same command with {DEBUG_FLAG}, or "
             f"{DEBUG_ENV}=1, to see the traceback, and report it)", EXIT_UNEXPECTED)


def option_name(loc: tuple) -> str:
    """A field of the options' model as the user typed it: ("shard_rows",) -> --shard-rows."""
    if len(loc) == 1 and isinstance(loc[0], str) and loc[0].isidentifier():
        return "--" + loc[0].replace("_", "-")
    return ".".join(map(str, loc)) or "option"


def fail(message: str, code: int) -> None:
    typer.echo(message, err=True)
    sys.exit(code)
