"""`workers eval ...` commands."""

import typer

app = typer.Typer(help="Accuracy: STS, reranking, backend agreement, datasets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
