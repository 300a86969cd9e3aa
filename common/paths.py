"""Where a process may read and write: paths resolved (symlinks and all) inside its roots, and
object URLs (s3://bucket/prefix) inside theirs.

A queue message is input, not an order (../shared/reference/reliability.md): a path it names, or
that a plan it points to names, is used only once its real path lies inside one of the roots
this process was configured with. `os.path.realpath` follows every symlink, so a link planted
inside a root that points outside it is caught too; an object URL is compared after its '.' and
'..' segments are refused (common/io/fs.py), since a bucket has no links.
"""

import os

from common.errors import ConfigError, RefusedMessage
from common.io import fs


def real(path: str | os.PathLike) -> str:
    """A local path resolved, or an object URL normalized."""
    try:
        return fs.normalize(str(path))
    except ConfigError:
        return str(path)


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when `path` resolves to `root` itself or to something below it."""
    return fs.within(str(path), str(root))


def check_within(path: str | os.PathLike, roots: tuple[str, ...], what: str, setting: str) -> str:
    """The real path of `path`, or RefusedMessage naming the roots and the setting that sets them."""
    if not any(is_within(path, root) for root in roots):
        shown = ", ".join(roots)
        raise RefusedMessage(f"{what} {path} resolves to {real(path)}, outside {setting} ({shown})")
    return real(path)
