"""The sink: finished episodes are published by a helper process, off the recording loop.

Writing an episode into HDF5 (h5py holds the GIL for every library call), compressing it, fsyncing
it and swapping the names take tens of milliseconds per Humanoid episode; in a thread of the
recording process they would compete with the step loop for the GIL. :class:`PublishProcess`
hands each :class:`~gail_robot.data.episode.Episode` to a child process instead: its arrays are
written into a memory file (``memfd``) whose descriptor travels over a socket with a small message
(one memory copy on the recording thread), and the child runs the
:class:`~gail_robot.data.transaction.Publisher` transaction and confirms (``docs/DESIGN.md §3``).

Crash safety, and what "saved" means:

* An episode counts as saved only once the child confirms it: the transaction is published (and
  with ``durable`` fsynced, directory included). :attr:`PublishProcess.saved` lists those.
* The child inherits the writer's file lock, so the file stays locked until both processes are
  gone, and it ignores SIGINT (a Ctrl-C reaches the whole process group). Once :meth:`submit`
  returned, the episode is in the socket: the child publishes it even if the recorder is killed
  at once (it reads to EOF, publishes, removes the spare and the lock sidecar and exits).
* A child killed mid-transaction is a recorder killed mid-publish: the published file is
  untouched; the episode being written is lost.
* After a failed transaction (disk full, ...) the child publishes nothing more; the parent raises
  :class:`PublishError` naming the episodes that were not saved.
"""

from __future__ import annotations

import itertools
import os
import pickle
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from gail_robot.data.episode import Episode, write_episode
from gail_robot.data.transaction import Publisher, release_inherited_lock

_CHILD = "import sys; from gail_robot.data.sink import main; sys.exit(main(sys.argv[1:]))"
_HEADER = struct.Struct("<Q")
#: episodes handed over and not yet confirmed, at most (what a failed write can take with it)
MAX_PENDING = 2


class PublishError(Exception):
    """A transaction failed, or the publishing process died.

    Attributes:
        reason: one line (``"No space left on device"``).
        lost: the episodes handed over and not saved, in order.
    """

    def __init__(self, reason: str, lost: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lost = lost


def failure_reason(exc: BaseException) -> str:
    """One line for a failed write: the OS error text when there is one (h5py buries it)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    found = re.search(r"errno = (\d+)", text)
    if found:
        return os.strerror(int(found.group(1)))
    return text.splitlines()[0] if text else type(exc).__name__


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

    def ready(self) -> bool:
        """Whether a message (or EOF) is waiting."""
        return bool(select.select([self.sock], [], [], 0)[0])


def _spool_fd() -> int:
    """A file in memory for one episode's arrays."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("gail-robot-episode", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as f:  # elsewhere: an unlinked temporary file
        return os.dup(f.fileno())


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


class PublishProcess:
    """Parent side: start the child, hand it episodes, collect its confirmations.

    Args:
        path: the demo file.
        durable: fsync each transaction (see :class:`~gail_robot.data.transaction.Publisher`).
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
        self.saved: list[str] = []  # confirmed: published (and fsynced when durable)
        self.copies = 0  # how often the child copied the file to make its spare
        self._in_flight: list[tuple[str, int]] = []  # (episode, spool fd) handed over, unconfirmed
        self._spools: list[int] = []  # spool fds free for reuse
        self._error: PublishError | None = None

    @property
    def pending(self) -> list[str]:
        """Episodes handed over and not yet confirmed, in order."""
        return [name for name, _ in self._in_flight]

    def submit(self, name: str, episode: Episode, header: dict[str, Any] | None = None) -> None:
        """Hand one episode to the child; ``header``: ``/data`` attributes of a new file.

        Returns at once unless :data:`MAX_PENDING` episodes are unconfirmed: then it waits for the
        oldest (a recorder faster than the disk stalls instead of piling up unsaved episodes).

        Raises:
            PublishError: an earlier transaction failed, or the child is gone.
        """
        self.poll()
        while len(self._in_flight) >= MAX_PENDING:
            self._receive()
        buffers: list[pickle.PickleBuffer] = []
        payload = pickle.dumps((name, episode, header), 5, buffer_callback=buffers.append)
        views = [b.raw() for b in buffers]
        fd = self._spools.pop() if self._spools else _spool_fd()
        self._in_flight.append((name, fd))
        try:
            _write_spool(fd, views)
            self._conn.send(("episode", payload, [v.nbytes for v in views]), [fd])
        except OSError:
            self._fail(self._exit_reason())

    def poll(self) -> None:
        """Collect the confirmations that arrived (no waiting).

        Raises:
            PublishError: a transaction failed, or the child is gone.
        """
        if self._error is not None:
            raise self._error
        while self._in_flight and self._conn.ready():
            self._receive()

    def flush(self) -> None:
        """Wait until every episode handed over is confirmed (raises as :meth:`poll`)."""
        self.poll()
        while self._in_flight:
            self._receive()

    def close(self) -> None:
        """Wait for everything handed over, stop the child (it removes its spare; the caller keeps the lock).

        Raises:
            PublishError: as :meth:`poll` (the child is stopped either way).
        """
        try:
            self.flush()
        finally:
            try:
                self._conn.send(("close",))
                self._conn.recv()
            except (OSError, EOFError):
                pass
            self._conn.sock.close()
            self._proc.wait()
            for fd in [fd for _, fd in self._in_flight] + self._spools:
                os.close(fd)
            self._in_flight, self._spools = [], []

    def _receive(self) -> None:
        try:
            reply = self._conn.recv()
        except (OSError, EOFError):
            self._fail(self._exit_reason())
        if reply[0] == "error":
            self._fail(reply[1])
        _, name, self.copies = reply
        done, fd = self._in_flight.pop(0)
        assert done == name, (done, name)
        self.saved.append(name)
        if len(self._spools) < 2:  # reused: no page faults for the next episode's copy
            self._spools.append(fd)
        else:
            os.close(fd)

    def _exit_reason(self) -> str:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the publishing process stopped answering"
        return f"the publishing process exited with status {code}"

    def _fail(self, reason: str) -> NoReturn:
        self._error = PublishError(reason, self.pending)
        raise self._error


# ----------------------------------------------------------------------------------- the child


def _publish(publisher: Publisher, message: tuple[Any, ...], spool_fd: int) -> str:
    _, payload, sizes = message
    spool = memoryview(os.pread(spool_fd, sum(sizes), 0))
    if spool.nbytes != sum(sizes):
        raise OSError(f"the episode's spool holds {spool.nbytes} of {sum(sizes)} bytes")
    offsets = [0, *itertools.accumulate(sizes)]
    buffers = [spool[a:b] for a, b in itertools.pairwise(offsets)]
    name, episode, header = pickle.loads(payload, buffers=buffers)

    def create(f: Any) -> None:
        f.create_group("data").attrs.update(header)

    cache: dict[str, list[bytes]] = {}  # compressed once, written twice (published file, then spare)
    publisher.publish(lambda f: write_episode(f["data"], name, episode, cache), create if header else None)
    return str(name)


def main(argv: list[str]) -> int:
    """The child's loop: publish each episode received and confirm it; exit on close or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(5)  # when cores are short, the recording loop goes first (its pace is what users see)
    conn = _Channel(socket.socket(fileno=int(argv[0])))
    lock_fd = int(argv[1])
    _, path_text, durable = conn.recv()
    path = Path(path_text)
    publisher = Publisher(path, durable)
    failed = ""
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
            if message[0] == "close":
                orphaned = False
                break
            fds, conn.fds = conn.fds, []
            try:
                if failed:  # after a failure nothing else is published; the parent has raised
                    reply(("error", failed))
                    continue
                name = _publish(publisher, message, fds[0])
            except Exception as exc:  # reported to the recorder, which stops with one line
                failed = failure_reason(exc)
                reply(("error", failed))
            else:
                reply(("saved", name, publisher.copies))
                publisher.catch_up()  # while the recorder records the next episode
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        publisher.close()
        if orphaned:
            release_inherited_lock(path, lock_fd)
        else:
            reply(("closed",))
    return 0
