"""Where a process may read and write: paths resolved (symlinks and all) inside its roots.

A queue message is input, not an order (../shared/reference/reliability.md): a path it names, or
that a plan it points to names, is used only once its real path lies inside one of the roots
this process was configured with. `os.path.realpath` follows every symlink, so a link planted
inside a root that points outside it is caught too.
"""

import os

from common.errors import RefusedMessage


def real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when `path` resolves to `root` itself or to something below it."""
    resolved, base = real(path), real(root)
    return resolved == base or resolved.startswith(base.rstrip(os.sep) + os.sep)


def check_within(path: str | os.PathLike, roots: tuple[str, ...], what: str, setting: str) -> str:
    """The real path of `path`, or RefusedMessage naming the roots and the setting that sets them."""
    if not any(is_within(path, root) for root in roots):
        shown = ", ".join(roots)
        raise RefusedMessage(f"{what} {path} resolves to {real(path)}, outside {setting} ({shown})")
    return real(path)
