"""How both CLIs (producer, workers) run and end, the same way under any typer or click version:
  - usage errors (a missing argument, an unknown option or command, a bad type or choice) are
    typer's own: its message naming the option, exit 2 (its standalone mode does this);
  - the project's own errors (Qwen3BatchError, an invalid option value) are one line, exit 2;
  - anything unexpected is one line that names --debug, exit 1; the traceback only with
    --debug (anywhere on the command line) or QWEN3B_DEBUG=1.
No private class of typer or click is caught here: only what the project raises, and Exception."""

import os
import sys

import pydantic
import typer

from common.errors import Qwen3BatchError

DEBUG_FLAG, DEBUG_ENV = "--debug", "QWEN3B_DEBUG"
EXIT_USAGE, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 2, 1, 130


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
