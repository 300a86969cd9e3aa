"""A FUSE mount of a folder whose writes fail on demand, the way a full or read-only disk fails.

    python tests/fakes/faulty_fs.py BACKING MOUNTPOINT CONTROL   (foreground; unmount with umount)

While the file CONTROL holds ENOSPC, EROFS or EACCES, every call that writes (create, write, mkdir,
link, rename, unlink, truncate) fails with that errno; empty or absent, everything passes through to
BACKING, hard links included. Reads always work. Tests run the real workers against a real kernel
mount that fills up or turns read-only for a while, then recovers.
"""

import errno
import os
import sys

from fuse import FUSE, FuseOSError
from nolinks_fs import NoLinks

WRITES = ("create", "write", "mkdir", "link", "rename", "unlink", "rmdir", "truncate", "symlink", "chmod")


class Faulty(NoLinks):
    def __init__(self, backing: str, control: str):
        super().__init__(backing)
        self.control = control

    def fault(self) -> None:
        try:
            with open(self.control) as f:
                name = f.read().strip()
        except FileNotFoundError:
            return
        if name:
            raise FuseOSError(getattr(errno, name))

    def link(self, target, source):
        os.link(self._path(source), self._path(target))

    def symlink(self, name, target):
        os.symlink(target, self._path(name))


def failing(method):
    def call(self, *args, **kwargs):
        self.fault()
        return method(self, *args, **kwargs)
    return call


for _name in WRITES:
    setattr(Faulty, _name, failing(getattr(Faulty, _name)))

if __name__ == "__main__":
    FUSE(Faulty(sys.argv[1], sys.argv[3]), sys.argv[2], foreground=True, nothreads=True)
