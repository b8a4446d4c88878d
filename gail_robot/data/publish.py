"""Atomic updates of an HDF5 file: every reader, at every instant, sees a complete file.

HDF5 is not crash-consistent: a process killed while the library updates its metadata (B-trees,
heaps, the superblock's end-of-file address) leaves a file that no longer opens. SWMR mode keeps a
file readable after a writer dies, but it cannot create groups (one per demo), and it leaves a "file
open for writing" flag that only the ``h5clear`` repair tool removes. So the published file is
never modified in place. Each change (a *transaction*: "add demo_7", "write the masks") is applied
to another file, which then atomically replaces the published one with ``os.replace``.

Two ways to get that other file:

* :func:`publish` copies the published file (an in-kernel copy), edits the copy and renames it
  over the original: O(file size) per transaction. Used for one-off edits (split, convert, merge).
* :class:`SparePublisher` (the recorder) keeps a *spare*: the file as it was one transaction ago
  (it is the previously published inode: the names are exchanged atomically, or hard-linked
  and renamed where an exchange is unsupported). Right after publishing
  transaction k-1 the spare catches up by re-applying k-1 (in a background thread when the
  publisher has one, while the next episode is being recorded); to publish k it applies k to the
  spare and swaps names. Each transaction is written twice, but nothing is copied and only one
  write is on the caller's clock: O(transaction) per episode however large the file grows.
  The spare is only reused while no process has the old file open (HDF5 readers hold a shared
  ``flock`` on it; opening the spare for writing then fails and the publisher falls back to a
  fresh copy), so a reader never sees its open file change.

Killed at any instant, the published name points at the last complete file; the hidden leftovers
(``.<name>.<pid>.tmp``, ``.<name>.spare``, ``.<name>.spare-next``) are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import io
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import h5py

from gail_robot.errors import UserError

#: lowest HDF5 file-format version written: 1.8 stores large attributes (model XML) densely;
#: the upper bound keeps files readable by HDF5 >= 1.10 (robomimic, Minari, MATLAB, ...).
LIBVER: tuple[str, str] = ("v108", "v110")

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
    data first (its ``auto_da_alloc`` heuristic), ~0.5 ms per episode on the recording thread;
    an exchange is one metadata operation. Returns False where unsupported (other OSes, file
    systems without exchange); the caller then falls back to link + rename.
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


def remove_leftovers(path: Path) -> int:
    """Delete the hidden files a killed writer left next to ``path`` (call with the lock held)."""
    removed = 0
    patterns = (
        f".{path.name}.*.tmp",
        f".{path.name}.*.tmp.npz",
        f".{path.name}.spare",
        f".{path.name}.spare-next",
    )
    for pattern in patterns:
        for stale in path.parent.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed += 1
    return removed


def _apply(target: Path, mode: str, edits: list[Edit], durable: bool) -> None:
    with h5py.File(target, mode, libver=LIBVER) as f:
        for edit in edits:
            edit(f)
    if durable:
        fsync_path(target)


def publish(path: Path, edit: Edit, *, create: Edit | None = None, durable: bool = True) -> None:
    """Apply ``edit`` to a copy of ``path`` (or to a new file) and atomically replace ``path``.

    Args:
        path: the published file (need not exist when ``create`` is given).
        edit: writes into the open copy.
        create: initialises a new file instead of copying ``path`` (new file or overwrite).
        durable: fsync the new file before the rename and the directory after it, so the change
            also survives a power cut; a killed process is survived either way.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        if create is None:
            shutil.copyfile(path, tmp)  # in-kernel copy (sendfile / copy_file_range) on Linux
            _apply(tmp, "r+", [edit], durable)
        else:
            _apply(tmp, "w", [create, edit], durable)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent, directory=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h
_sync_file_range: Any = None

#: with writeback on, each time this many bytes were written their writeback is started
WRITEBACK_BATCH_BYTES = 256 * 1024


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of ``fd`` to disk without waiting (Linux ``sync_file_range``).

    A transaction's chunk data is written first and its HDF5 metadata after; starting the data's
    writeback right away lets the disk work while HDF5 builds the metadata, so the ``fsync`` that
    makes the transaction durable waits for far less. A no-op where unsupported.
    """
    global _sync_file_range
    if sys.platform != "linux":
        return
    if _sync_file_range is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _sync_file_range = getattr(libc, "sync_file_range", False)
        if _sync_file_range:
            _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _sync_file_range.restype = ctypes.c_int
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: errors are ignored


class _RecordingFile(io.RawIOBase):
    """A file for h5py's ``fileobj`` driver that remembers every byte range HDF5 writes.

    With ``writeback``, what is written starts going to disk in batches (see :func:`start_writeback`).
    """

    def __init__(self, fd: int, writeback: bool = False) -> None:
        super().__init__()
        self.fd = fd
        self.pos = 0
        self.written: list[tuple[int, int]] = []
        self.writeback = writeback
        # bytes written since writeback was last started, and the span of the file they lie in
        self._unsynced, self._start, self._end = 0, 1 << 62, 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: os.fstat(self.fd).st_size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = os.preadv(self.fd, [buffer], self.pos)
        self.pos += n
        return n

    def write(self, data: Any) -> int:
        n = os.pwrite(self.fd, data, self.pos)
        self.written.append((self.pos, n))
        if self.writeback:
            self._unsynced += n
            self._start, self._end = min(self._start, self.pos), max(self._end, self.pos + n)
            if self._unsynced >= WRITEBACK_BATCH_BYTES:
                start_writeback(self.fd, self._start, self._end - self._start)
                self._unsynced, self._start, self._end = 0, 1 << 62, 0
        self.pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        os.ftruncate(self.fd, size)
        return size


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges sorted, with overlapping and touching ones merged."""
    merged: list[list[int]] = []
    for offset, length in sorted(ranges):
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset + length - merged[-1][0])
        elif length > 0:
            merged.append([offset, length])
    return [(a, b) for a, b in merged]


def _open_exclusive(path: Path) -> int:
    """An fd for writing ``path`` that no reader has open (HDF5 readers hold a shared ``flock``)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def apply_recorded(target: Path, edit: Edit, durable: bool) -> tuple[list[tuple[int, int]], int]:
    """Apply ``edit`` to ``target`` in place; returns the merged byte ranges written and the final size."""
    fd = _open_exclusive(target)
    try:
        raw = _RecordingFile(fd, writeback=durable)
        with h5py.File(raw, "r+", libver=LIBVER) as f:
            edit(f)
        if durable:
            os.fsync(fd)
        return merge_ranges(raw.written), os.fstat(fd).st_size
    finally:
        os.close(fd)  # also drops the lock


def copy_ranges(src: Path, dst: Path, ranges: list[tuple[int, int]], size: int, durable: bool) -> None:
    """Make ``dst`` equal to ``src`` where they may differ: copy ``ranges``, set the size to ``size``.

    The copies are system calls that release the GIL (``copy_file_range`` on Linux, in-kernel).
    """
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = _open_exclusive(dst)
        try:
            for offset, length in ranges:
                done = 0
                while done < length:
                    if hasattr(os, "copy_file_range"):
                        n = os.copy_file_range(sfd, dfd, length - done, offset + done, offset + done)
                    else:  # pragma: no cover (not Linux)
                        chunk = os.pread(sfd, min(length - done, 1 << 20), offset + done)
                        n = os.pwrite(dfd, chunk, offset + done)
                    if n <= 0:
                        raise OSError(errno.EIO, f"short copy from {src}")
                    done += n
            os.ftruncate(dfd, size)
            if durable:
                os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


class SparePublisher:
    """Publishes transactions at O(transaction) cost by keeping a spare one transaction behind.

    Each transaction is applied to the spare through h5py's ``fileobj`` driver, which records the
    byte ranges HDF5 writes. After the names are exchanged, the new spare (the previous published
    inode, byte-identical to what the spare was before the transaction) catches up by copying
    exactly those ranges from the published file: no HDF5 work, and in the background thread the
    copies run without the GIL, so the recording thread is not held up.

    Use one instance per writer session, with the writer's :class:`FileLock` held.

    Args:
        path: the published file.
        durable: fsync before each rename and the directory after it (with the catch-up, before
            the spare is touched); chunk data starts its writeback while HDF5 writes the metadata.
        executor: runs the spare's catch-up in the background (None: in :meth:`publish`).
    """

    def __init__(self, path: Path, durable: bool = True, executor: Executor | None = None) -> None:
        self.path = path
        self.durable = durable
        self.executor = executor
        self.spare = path.parent / f".{path.name}.spare"
        self.next_spare = path.parent / f".{path.name}.spare-next"
        # the last transaction, published but not yet in the spare: (byte ranges, file size)
        self._pending: tuple[list[tuple[int, int]], int] | None = None
        self._spare_ok = False
        self._catch_up: Future[None] | None = None
        self.copies = 0  # how often the spare had to be rebuilt by copying (diagnostics)

    def _drop_spare(self) -> None:
        self._spare_ok = False
        self._pending = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spare)

    def publish(self, edit: Edit, create: Edit | None = None, replayable: bool = True) -> None:
        """Make ``edit`` (applied after ``create`` for a new file) the published state.

        Args:
            edit: the transaction.
            create: initialises a new file (the spare is rebuilt at the next publish).
            replayable: False publishes through a copy of the file and forgets the spare (for
                edits that can only run once and must not be retried after a failure).
        """
        self._finish_catch_up()
        if create is not None or not replayable:
            publish(self.path, edit, create=create, durable=self.durable)
            self._drop_spare()
            return
        try:
            written = self._update_spare(edit)
        except Exception:
            # The spare is locked by a reader of an old version, or damaged: rebuild it by copying.
            self._drop_spare()
            written = self._update_spare(edit)
        self._swap(written)

    def _update_spare(self, edit: Edit) -> tuple[list[tuple[int, int]], int]:
        try:
            if not (self._spare_ok and self._pending is None):
                shutil.copyfile(self.path, self.spare)
                self.copies += 1
            return apply_recorded(self.spare, edit, self.durable)
        except BaseException:
            self._drop_spare()  # possibly half-edited: unusable
            raise

    def _swap(self, written: tuple[list[tuple[int, int]], int]) -> None:
        if exchange_names(self.spare, self.path):
            linked = True  # the previously published inode is now the spare
        else:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.next_spare)
                os.link(self.path, self.next_spare)  # keep the current inode: it becomes the spare
                linked = True
            except OSError:  # no hard links on this file system: publish without a spare
                linked = False
            os.replace(self.spare, self.path)
        if linked and self.next_spare.exists():
            os.replace(self.next_spare, self.spare)
        self._spare_ok = linked
        self._pending = written if linked else None
        if not linked:
            if self.durable:
                fsync_path(self.path.parent, directory=True)
        elif self.executor is None:
            self._catch_up_spare()
        else:
            self._catch_up = self.executor.submit(self._catch_up_spare)

    def _catch_up_spare(self) -> None:
        """Copy the published transaction's byte ranges into the spare; on failure the next publish copies.

        With ``durable``, the directory is synced first: the new names must be on disk before the
        spare (the previously published inode) is modified, or a power cut could leave the published
        name on a half-updated file. Until then the transaction is safe from a killed process but
        not yet from a power cut; the next publish and :meth:`close` wait for it.
        """
        try:
            if self.durable:
                fsync_path(self.path.parent, directory=True)
            if self._pending is not None:
                ranges, size = self._pending
                copy_ranges(self.path, self.spare, ranges, size, self.durable)
            self._pending = None
        except Exception:  # a reader holds the old file (its lock), or the disk is full
            self._drop_spare()

    def _finish_catch_up(self) -> None:
        if self._catch_up is not None:
            future, self._catch_up = self._catch_up, None
            future.result()

    def close(self) -> None:
        """Remove the spare (the published file is complete on its own)."""
        self._finish_catch_up()
        self._drop_spare()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.next_spare)
