"""A FUSE mount of a folder that refuses hard links, as S3/GCS FUSE mounts and some SMB shares do.

    python tests/fakes/nolinks_fs.py BACKING MOUNTPOINT     (foreground; unmount with fusermount -u
                                                              or by killing it)

Everything else passes through to BACKING, so the tests run the real worker and producer code
against a real kernel mount whose link(2) fails with EPERM, the way s3fs-fuse's does.
"""

import errno
import os
import sys

from fuse import FUSE, FuseOSError, Operations


class NoLinks(Operations):
    def __init__(self, backing: str):
        self.backing = os.path.realpath(backing)

    def _path(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def access(self, path, mode):
        if not os.access(self._path(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        return {key: getattr(st, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                  "st_nlink", "st_size", "st_uid")}

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._path(path))]

    def mkdir(self, path, mode):
        os.mkdir(self._path(path), mode)

    def rmdir(self, path):
        os.rmdir(self._path(path))

    def unlink(self, path):
        os.unlink(self._path(path))

    def rename(self, old, new):
        os.rename(self._path(old), self._path(new))

    def link(self, target, source):
        raise FuseOSError(errno.EPERM)  # what s3fs-fuse answers

    def symlink(self, name, target):
        raise FuseOSError(errno.EPERM)

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._path(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._path(path), times)

    def truncate(self, path, length, fh=None):
        with open(self._path(path), "r+b") as f:
            f.truncate(length)

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                  "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def open(self, path, flags):
        return os.open(self._path(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        os.fsync(fh)


if __name__ == "__main__":
    FUSE(NoLinks(sys.argv[1]), sys.argv[2], foreground=True, nothreads=True)
