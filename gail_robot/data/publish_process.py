"""Publishing demo episodes from a helper process, off the recording process's clock.

Writing an episode into HDF5 (h5py keeps the GIL for every library call), fsyncing it and
swapping the names take ~10 ms per Humanoid episode, and compressing it in a thread of the
recording process competes with the loop for the GIL: a few percent of the step loop in all
(``benchmarks/bench_data.py``). :class:`PublishProcess` hands each finished episode (raw chunk
blocks) to a child process that compresses it and runs the same
:class:`~gail_robot.data.publish.SparePublisher` transaction on another core while recording goes on.

Crash safety is kept, and the unit of loss is unchanged:

* The child inherits the writer's file lock, so the file stays locked until both processes are
  gone, and it ignores SIGINT (a Ctrl-C in the terminal reaches the whole process group; the child
  finishes what it holds and exits when the recorder closes the connection).
* :meth:`PublishProcess.submit` returns once the episode is in the socket: from then on it is
  published even if the recording process is SIGKILLed at once (the child reads to the end of the
  message, publishes, then sees EOF, removes the spare and the lock sidecar and exits).
* A child killed mid-transaction is the same as a recorder killed mid-publish: the published
  file is untouched (names are swapped atomically); the episode being written is lost.

Errors of the child (disk full, ...) come back as messages and are raised by the next
:meth:`~PublishProcess.poll`, :meth:`~PublishProcess.submit`, :meth:`~PublishProcess.flush` or
:meth:`~PublishProcess.close`, naming the demos that were not saved.

The child runs :func:`main` (started by :class:`PublishProcess` with the socket and lock fds).
"""

from __future__ import annotations

import itertools
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

from gail_robot.data.chunks import DeferredColumn
from gail_robot.errors import UserError

_CHILD = "import sys; from gail_robot.data.publish_process import main; sys.exit(main(sys.argv[1:]))"
_HEADER = struct.Struct("<Q")


class _Channel:
    """Length-prefixed pickled messages over a stream socket, each optionally carrying fds."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fds: list[int] = []  # fds received with the last message

    def send(self, message: Any, fds: list[int] | None = None) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        data = memoryview(_HEADER.pack(len(payload)) + payload)
        sent = socket.send_fds(self.sock, [data], fds) if fds else self.sock.send(data)
        self.sock.sendall(data[sent:])

    def _read_exactly(self, n: int, first: bool = False) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            if first and got == 0:  # fds travel with a message's first bytes
                data, fds, _, _ = socket.recv_fds(self.sock, n, 16)
                self.fds = list(fds)
                view[: len(data)] = data
                k = len(data)
            else:
                k = self.sock.recv_into(view[got:])
            if k == 0:
                raise EOFError("connection closed")
            got += k
        return buf

    def recv(self) -> Any:
        (n,) = _HEADER.unpack(self._read_exactly(_HEADER.size, first=True))
        return pickle.loads(self._read_exactly(n))

    def poll(self) -> bool:
        """Whether a message (or EOF) is waiting."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> None:
        self.sock.close()


def _write_spool(fd: int, buffers: list[memoryview]) -> None:
    """Write ``buffers`` back to back from offset 0 of ``fd`` (gather writes, GIL released)."""
    offset = 0
    for start in range(0, len(buffers), 512):  # IOV_MAX is 1024 on Linux
        batch = buffers[start : start + 512]
        size = sum(b.nbytes for b in batch)
        done = os.pwritev(fd, batch, offset)
        if done < size:  # a short write: finish the rest of the batch from a joined copy
            flat = memoryview(b"".join(batch))
            while done < size:
                done += os.pwrite(fd, flat[done:], offset + done)
        offset += size


def _compress_columns(value: Any) -> Any:
    """``value`` with every DeferredColumn replaced by its compressed StoredColumn."""
    if isinstance(value, dict):
        return {k: _compress_columns(v) for k, v in value.items()}
    if isinstance(value, DeferredColumn):
        return value.compress()
    return value


class PublishProcess:
    """Parent side: start the child, send it episodes, collect what it published.

    Episodes arrive with :class:`~gail_robot.data.chunks.DeferredColumn` s (raw blocks): the child
    compresses them. The blocks are pickled out of band (protocol 5) and written into a memory file
    (``memfd``, reused once the child has published from it) whose descriptor travels with a small
    message: one memory copy on the recording thread, no waiting for the child to drain a socket.

    Args:
        path: the demo file.
        durable: fsync each published file (as :class:`~gail_robot.data.publish.SparePublisher`).
        lock_fd: the writer's locked sidecar fd; the child holds the lock until it exits.
    """

    def __init__(self, path: Path, durable: bool, lock_fd: int) -> None:
        self.path = path
        parent, child = socket.socketpair()
        self._conn = _Channel(parent)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(child.fileno()), str(lock_fd)],
                pass_fds=(child.fileno(), lock_fd),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        self._conn.send(("open", str(path), durable))
        self._in_flight: list[tuple[str, int]] = []  # (demo, spool fd) sent, not yet confirmed
        self._spools: list[int] = []  # spool fds free for reuse

    @property
    def pending(self) -> list[str]:
        """Demos sent, not yet confirmed, in order."""
        return [name for name, _ in self._in_flight]

    def submit(
        self, name: str, arrays: dict[str, Any], attrs: dict[str, Any], images: set[str], create_meta: Any
    ) -> None:
        """Send one demo (the arguments of :func:`~gail_robot.data.writer.demo_edit`, and the header
        to create a new file with, or None)."""
        self.poll()
        buffers: list[pickle.PickleBuffer] = []
        payload = pickle.dumps((name, arrays, attrs, images, create_meta), 5, buffer_callback=buffers.append)
        views = [b.raw() for b in buffers]
        fd = self._spools.pop() if self._spools else os.memfd_create("gail-robot-episode", os.MFD_CLOEXEC)
        try:
            _write_spool(fd, views)
            self._conn.send(("demo", payload, [v.nbytes for v in views]), [fd])
        except OSError:
            os.close(fd)
            self._raise_lost(self._exit_reason())
        self._in_flight.append((name, fd))

    def poll(self) -> None:
        """Collect the confirmations that arrived (no waiting); raises UserError for a failed publish."""
        while self._in_flight and self._conn.poll():
            self._receive()

    def flush(self) -> None:
        """Wait until everything sent is published."""
        while self._in_flight:
            self._receive()

    def reset_spare(self) -> None:
        """Tell the child that the file was changed by another path (its spare is stale)."""
        self.flush()
        self._conn.send(("reset",))

    def close(self) -> None:
        """Wait for everything sent, stop the child (it removes its spare); the caller keeps the lock."""
        try:
            self.flush()
        finally:
            try:
                self._conn.send(("close",))
                self._conn.recv()
            except (OSError, EOFError):
                pass
            self._conn.close()
            self._proc.wait()
            self._drop_spools()

    def _drop_spools(self) -> None:
        for _, fd in self._in_flight:
            os.close(fd)
        self._in_flight = []
        for fd in self._spools:
            os.close(fd)
        self._spools = []

    def _receive(self) -> None:
        try:
            reply = self._conn.recv()
        except (OSError, EOFError):
            self._raise_lost(self._exit_reason())
        if reply[0] == "error":
            lost = self.pending
            self._drop_spools()
            raise UserError(
                f"cannot write {self.path}: {reply[1]}; not saved: {', '.join(lost)}; "
                f"{self.path} still holds every demo saved before"
            )
        _, fd = self._in_flight.pop(0)
        if len(self._spools) < 2:
            self._spools.append(fd)
        else:
            os.close(fd)

    def _exit_reason(self) -> str:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        return f"it exited with status {code}"

    def _raise_lost(self, why: str) -> NoReturn:
        lost = self.pending
        self._drop_spools()
        names = f"; not saved: {', '.join(lost)}" if lost else ""
        raise UserError(f"the process writing {self.path} failed ({why}){names}")


# ----------------------------------------------------------------------------------- the child


def _apply(publisher: Any, message: tuple[Any, ...], spool_fd: int) -> None:
    from gail_robot.data.schema import write_header
    from gail_robot.data.writer import demo_edit

    _, payload, sizes = message
    spool = memoryview(os.pread(spool_fd, sum(sizes), 0))
    if spool.nbytes != sum(sizes):
        raise OSError(f"the episode's spool holds {spool.nbytes} of {sum(sizes)} bytes")
    offsets = [0, *itertools.accumulate(sizes)]
    buffers = [spool[a:b] for a, b in itertools.pairwise(offsets)]
    name, arrays, attrs, images, create_meta = pickle.loads(payload, buffers=buffers)
    arrays = _compress_columns(arrays)
    create = None
    if create_meta is not None:

        def create(f: Any) -> None:
            write_header(f.create_group("data"), create_meta)

    publisher.publish(demo_edit(name, arrays, attrs, images), create=create)


def _release_lock(lock_fd: int, path: Path) -> None:
    """Remove the lock sidecar if it is still ours, then drop the lock (the recorder died)."""
    from gail_robot.data.publish import FileLock

    sidecar = FileLock(path).path
    try:
        if os.stat(sidecar).st_ino == os.fstat(lock_fd).st_ino:
            os.unlink(sidecar)
    except OSError:
        pass
    os.close(lock_fd)


def main(argv: list[str]) -> int:
    """The child's loop: publish each received episode and confirm it; exit on close or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(5)  # when cores are short, the recording loop goes first (its pace is what users see)
    from gail_robot.data.publish import SparePublisher

    conn = _Channel(socket.socket(fileno=int(argv[0])))
    lock_fd = int(argv[1])
    _, path_text, durable = conn.recv()
    path = Path(path_text)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spare-catch-up")
    publisher = SparePublisher(path, durable, executor=pool)
    failed = False
    orphaned = True  # the recorder died without saying "close": clean up after it

    def reply(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except OSError:  # the recorder is gone: still publish everything it handed over
            pass

    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "close":
                orphaned = False
                break
            if kind == "reset":
                publisher.close()
                continue
            fds, conn.fds = conn.fds, []
            try:
                if failed:  # after a failure nothing else is published; the parent has raised
                    reply(("error", "an earlier episode failed"))
                    continue
                _apply(publisher, message, fds[0])
            except Exception as exc:  # reported to the recorder, which raises a UserError
                failed = True
                reply(("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            else:
                reply(("ok",))
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        publisher.close()
        pool.shutdown(wait=True)
        if orphaned:
            _release_lock(lock_fd, path)
        if not orphaned:
            reply(("closed",))
    return 0
