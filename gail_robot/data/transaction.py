"""The crash-safe transaction: every reader, at every instant, sees a complete demo file.

HDF5 is not crash-consistent: a process killed while the library updates its metadata leaves a
file that no longer opens (SWMR cannot create groups, and leaves a flag only ``h5clear`` removes).
So the published file is never modified in place (``docs/DESIGN.md §3``):

* :class:`FileLock` keeps two writers apart (a sidecar ``.<name>.lock``, inherited by the
  publishing process so that the file stays locked until both are gone).
* :class:`Publisher` applies each change (a *transaction*: "add demo_7", "write the masks") to a
  *spare* file ``.<name>.spare``: the file as it was one transaction ago (the previously
  published inode). The spare then atomically takes the published name (Linux
  ``renameat2(RENAME_EXCHANGE)``; elsewhere a hard link keeps the old inode and ``os.replace``
  renames) and the old file becomes the spare, which catches up by applying the same transaction
  again. Each transaction is written twice but nothing is copied: the cost stays proportional to
  the episode, not the file. Only a new session (and a spare that a reader still holds open, or
  that a failure left behind) copies the file once.
* Killed at any instant, the published name points at the last complete file; the hidden
  leftovers are removed by :func:`remove_leftovers` when the next writer takes the lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from gail_robot.errors import UserError

#: lowest HDF5 file-format version written: 1.8 stores large attributes (model XML) densely;
#: the upper bound keeps files readable by HDF5 >= 1.10 (robomimic, Minari, MATLAB, ...).
LIBVER: tuple[str, str] = ("v108", "v110")

#: a change to an open HDF5 file (it must write the same content each time it is applied)
Edit = Callable[[h5py.File], None]


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file (or a directory's entries) to stable storage."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2  # linux/fs.h
_renameat2: Any = None


def exchange_names(a: Path, b: Path) -> bool:
    """Atomically swap two existing names (Linux ``renameat2(RENAME_EXCHANGE)``).

    Why not link + rename: renaming over an existing file makes ext4 flush the renamed file's
    data first (its ``auto_da_alloc`` heuristic); an exchange is one metadata operation. Returns
    False where unsupported (other OSes, file systems without exchange).
    """
    global _renameat2
    if sys.platform != "linux":
        return False
    if _renameat2 is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _renameat2 = getattr(libc, "renameat2", False)
        if _renameat2:
            c_int, c_path = ctypes.c_int, ctypes.c_char_p
            _renameat2.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
            _renameat2.restype = ctypes.c_int
    if not _renameat2:
        return False
    at_fdcwd = -100
    rc = _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class FileLock:
    """Exclusive, non-blocking ``flock`` on a hidden sidecar file ``.<name>.lock``.

    The sidecar (not the data file) is locked because the data file is replaced on every publish.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.parent / f".{target.name}.lock"
        self._fd: int | None = None

    def acquire(self, orphan_wait: float = 10.0) -> None:
        """Take the lock or raise a UserError naming the holder.

        Args:
            orphan_wait: seconds to wait when the recorded holder is dead: a killed recorder's
                publishing process holds the lock until it has saved the episodes it was handed.
        """
        deadline = time.monotonic() + orphan_wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                released = not self._is_current(fd)
                os.close(fd)
                if released:
                    # The holder unlinked the sidecar between our open and flock (it is releasing):
                    # retry on the current file instead of reporting a writer that is gone.
                    continue
                if holder.isdigit() and not _alive(int(holder)) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                who = f" (pid {holder})" if holder else ""
                raise UserError(f"{self.target}: another process is writing it{who}") from None
            # The previous holder may have unlinked the sidecar between our open and flock: then
            # we locked an orphaned inode and must retry on the current file.
            if self._is_current(fd):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
                return
            os.close(fd)

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is the sidecar now at ``self.path`` (not one a releasing holder unlinked)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @property
    def fd(self) -> int | None:
        """The locked sidecar's descriptor (None when not held)."""
        return self._fd

    def release(self) -> None:
        """Drop the lock and remove the sidecar."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def release_inherited_lock(target: Path, fd: int) -> None:
    """Remove the sidecar if ``fd`` (a lock inherited from a writer that died) still is it; close ``fd``."""
    sidecar = FileLock(target).path
    with contextlib.suppress(OSError):
        if os.stat(sidecar).st_ino == os.fstat(fd).st_ino:
            os.unlink(sidecar)
    os.close(fd)


def remove_leftovers(path: Path) -> int:
    """Delete the hidden files a killed writer left next to ``path`` (call with the lock held)."""
    removed = 0
    for pattern in (f".{path.name}.*.tmp", f".{path.name}.*.tmp.npz", f".{path.name}.spare*"):
        for stale in path.parent.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed += 1
    return removed


def _unused(path: Path) -> bool:
    """Whether no process has ``path`` open (HDF5 readers hold a shared ``flock`` on their file).

    No new reader can open the spare (its name is hidden), so the answer cannot turn false later.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops our flock


class Publisher:
    """Publishes transactions on ``path`` through a spare one transaction behind.

    Use one instance per writer session, with the writer's :class:`FileLock` held.

    Args:
        path: the published file.
        durable: fsync the new file before it takes the name and the directory after, so that a
            published transaction also survives a power cut (a killed process is survived either way).
    """

    def __init__(self, path: Path, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.spare = path.parent / f".{path.name}.spare"
        # What the spare lacks to equal the published file: None = unknown (copy the file), else
        # (start from an empty file, the edits to apply)
        self._behind: tuple[bool, list[Edit]] | None = None
        self.copies = 0  # how often the spare was made by copying the file (diagnostics, tests)

    def _drop_spare(self) -> None:
        self._behind = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spare)  # never truncated in place: a reader may still hold that inode

    def _apply(self, fresh: bool, edits: list[Edit]) -> None:
        with h5py.File(self.spare, "w" if fresh else "r+", libver=LIBVER) as f:
            for edit in edits:
                edit(f)

    def publish(self, edit: Edit, create: Edit | None = None, replayable: bool = True) -> None:
        """Make ``edit`` (applied after ``create`` for a new file) the published state.

        Args:
            edit: the transaction.
            create: initialises a new file (new file, or overwriting the published one).
            replayable: False for edits that can run only once (a generator of demos): the spare
                is then not caught up but rebuilt by copying at the next transaction.

        Raises:
            OSError, ValueError, ...: whatever the edit or the file system raised; the published
                file is untouched then.
        """
        self.catch_up()
        fresh = create is not None
        edits = [create, edit] if create is not None else [edit]
        try:
            if fresh:
                self._drop_spare()
            elif self._behind is None:
                self._drop_spare()
                shutil.copyfile(self.path, self.spare)  # in-kernel copy (copy_file_range)
                self.copies += 1
            self._apply(fresh, edits)
            if self.durable:
                fsync_path(self.spare)
        except BaseException:
            self._drop_spare()  # possibly half-edited: unusable
            raise
        self._swap()
        if self.durable:
            fsync_path(self.path.parent, directory=True)  # before the old inode is touched again
        if self._behind is not None:
            self._behind = (fresh, edits) if replayable else None
            if not replayable:
                self._drop_spare()

    def _swap(self) -> None:
        """Give the spare the published name; the previously published inode becomes the spare."""
        if not self.path.exists():  # a new file: the spare is rebuilt from nothing
            os.replace(self.spare, self.path)
            self._behind = (True, [])
            return
        if exchange_names(self.spare, self.path):
            self._behind = (False, [])
            return
        keep = self.path.parent / f".{self.path.name}.spare-next"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(keep)
            os.link(self.path, keep)  # keep the current inode: it becomes the spare
        except OSError:  # no hard links on this file system: publish without a spare
            os.replace(self.spare, self.path)
            self._behind = None
            return
        os.replace(self.spare, self.path)
        os.replace(keep, self.spare)
        self._behind = (False, [])

    def catch_up(self) -> None:
        """Apply the last transaction to the spare (the publishing process runs this while it waits).

        On failure (a reader still holds the old file, the disk is full) the spare is dropped and
        the next transaction copies the file instead.
        """
        if self._behind is None or not self._behind[1]:
            return
        fresh, edits = self._behind
        try:
            if fresh:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.spare)
            elif not _unused(self.spare):
                raise OSError(errno.EBUSY, "the previous file is open in a reader")
            self._apply(fresh, edits)
        except Exception:
            self._drop_spare()
            return
        self._behind = (False, [])

    def close(self) -> None:
        """Remove the spare (the published file is complete on its own)."""
        self._drop_spare()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.parent / f".{self.path.name}.spare-next")


def publish_once(path: Path, edit: Edit, create: Edit | None = None, durable: bool = True) -> None:
    """One transaction on ``path`` (a one-off edit: conversion, merge, masks), leaving no spare."""
    publisher = Publisher(path, durable)
    try:
        publisher.publish(edit, create, replayable=False)
    finally:
        publisher.close()
