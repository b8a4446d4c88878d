"""Per-step datasets compressed chunk by chunk while the episode is still being recorded.

Compressing a whole Humanoid episode (1000 steps, ~7 MB) when it ends costs tens of milliseconds
of the recording loop. Instead each per-step dataset of the episode is cut into HDF5 chunks as the
rows arrive; a full chunk is deflated by a background thread (ISA-L's deflate releases the GIL), or
kept raw for the publishing process to deflate (``deferred``), and, when the episode is saved,
the finished chunks are stored with ``write_direct_chunk``: the
standard zlib streams that HDF5's ``gzip`` filter (after ``shuffle``, when enabled) decodes, so
every HDF5 reader reads them. Only the last, partial chunk is compressed at save time.
"""

from __future__ import annotations

import zlib
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from isal import isal_zlib

from gail_robot.data.schema import CHUNK_BYTES, COMPRESSION, COMPRESSION_LEVEL, SHUFFLE


def hdf5_shuffle(raw: np.ndarray) -> bytes:
    """HDF5's shuffle filter: byte ``j`` of every element, then byte ``j + 1``, ...

    Args:
        raw: a C-contiguous array; its element size is the shuffle width.
    """
    itemsize = raw.dtype.itemsize
    if itemsize == 1:
        return raw.tobytes()
    return np.ascontiguousarray(raw).view(np.uint8).reshape(-1, itemsize).T.tobytes()


def deflate_chunk(
    block: np.ndarray,
    rows: int,
    shuffle: bool,
    level: int = COMPRESSION_LEVEL,
    head: np.ndarray | None = None,
) -> bytes:
    """One stored chunk: ``[head] + block`` padded to ``rows`` rows, shuffled, zlib-compressed.

    Args:
        block: ``(k, *row_shape)`` with ``k <= rows`` (``k < rows`` with a ``head``).
        rows: rows per chunk of the dataset (edge chunks are stored full size).
        shuffle: apply the shuffle filter first.
        level: deflate level.
        head: one row stored before ``block`` (the shifted ``obs`` column), streamed into the
            compressor instead of concatenated when no padding or shuffle needs the whole chunk.
    """
    # ISA-L writes a standard zlib stream (HDF5's gzip filter decodes it) about 10x faster than
    # zlib at the same ratio: measured 613 vs 61 MB/s on Humanoid-v5 observations. Its levels
    # are 0-3, so the schema's level 1 maps to ISA-L level 1.
    level = min(level, 3)
    if head is not None and not shuffle and len(block) + 1 == rows:
        z = isal_zlib.compressobj(level)
        parts = [np.ascontiguousarray(p) for p in (head, block) if p.size]
        return b"".join([z.compress(p.data.cast("B")) for p in parts] + [z.flush()])
    if head is not None:
        block = np.concatenate([head[None], block])
    if len(block) < rows:
        pad = np.zeros((rows - len(block), *block.shape[1:]), dtype=block.dtype)
        block = np.concatenate([block, pad])
    raw = np.ascontiguousarray(block)
    payload = hdf5_shuffle(raw) if shuffle else raw.data.cast("B")
    return isal_zlib.compress(payload, level)


class _Job:
    """One chunk to compress; ``value`` is set when done."""

    __slots__ = ("args", "cancelled", "future", "value")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.future: Future[None] | None = None
        self.value: bytes | None = None
        self.cancelled = False


def _run_jobs(jobs: list[_Job]) -> None:
    for job in jobs:
        if not job.cancelled:
            job.value = deflate_chunk(*job.args)


class ChunkCompressor:
    """Compresses the chunks of one episode, in a background thread when given an executor.

    Chunks are handed over in batches of about ``batch_bytes`` raw bytes, not one by one: every
    hand-over wakes the worker thread, and each wake-up costs the recording thread a GIL round
    trip (measured: ~3 us per env step on Humanoid-v5 when each 64 KiB chunk was a task).

    Args:
        executor: runs the batches (None: compress in the calling thread, at once).
        batch_bytes: raw bytes collected before a batch is handed over (also what is left to
            compress when an episode ends, while the recording thread waits).
        deferred: compress nothing here: columns finish as :class:`DeferredColumn` (raw blocks),
            compressed by whoever writes them (the publishing process).
    """

    def __init__(
        self, executor: Executor | None = None, batch_bytes: int = 256 * 1024, deferred: bool = False
    ) -> None:
        self.executor = executor
        self.batch_bytes = int(batch_bytes)
        self.deferred = deferred
        self._batch: list[_Job] = []
        self._bytes = 0

    def submit(self, *args: Any) -> _Job:
        """Queue ``deflate_chunk(*args)`` (``args[0]`` is the block; it must not change afterwards)."""
        job = _Job(args)
        if self.deferred:
            return job
        if self.executor is None:
            job.value = deflate_chunk(*args)
            return job
        self._batch.append(job)
        self._bytes += args[0].nbytes
        if self._bytes >= self.batch_bytes:
            self.flush()
        return job

    def flush(self) -> None:
        """Hand every queued chunk to the worker now."""
        if self._batch and self.executor is not None:
            batch, self._batch, self._bytes = self._batch, [], 0
            future = self.executor.submit(_run_jobs, batch)
            for job in batch:
                job.future = future

    def result(self, job: _Job) -> bytes:
        """The compressed chunk (waits for its batch)."""
        if job.value is None:
            if job.future is None:
                self.flush()
            assert job.future is not None
            job.future.result()
        assert job.value is not None
        return job.value


class ChunkedColumn:
    """Rows of one per-step dataset (``actions``, ``states``, ``obs/<key>``, ...).

    Args:
        row_shape: shape of one row.
        dtype: stored dtype.
        image: camera frames: one frame per chunk, no shuffle.
        compressor: compresses full chunks (None: in the calling thread).
        shuffle: apply HDF5's shuffle filter before deflate.
    """

    def __init__(
        self,
        row_shape: tuple[int, ...],
        dtype: Any,
        image: bool = False,
        compressor: ChunkCompressor | None = None,
        shuffle: bool = SHUFFLE,
    ) -> None:
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        row_bytes = max(1, int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize)
        self.rows = 1 if image else max(1, CHUNK_BYTES // row_bytes)
        self.shuffle = shuffle and not image and self.dtype.itemsize > 1
        self.compressor = compressor if compressor is not None else ChunkCompressor()
        self._block = np.empty((self.rows, *self.row_shape), dtype=self.dtype)
        self._fill = 0  # rows in _block
        self._sealed = False
        self._chunks: list[_Job] = []
        self.count = 0
        self.followers: list[ShiftedColumn] = []  # columns built from this one's full blocks

    def _submit(self, block: np.ndarray, rows: int, head: np.ndarray | None = None) -> None:
        self._chunks.append(self.compressor.submit(block, rows, self.shuffle, COMPRESSION_LEVEL, head))

    def append(self, row: np.ndarray) -> None:
        """Add one row (cast to the column's dtype; the shape must be ``row_shape``)."""
        if self._sealed:
            raise RuntimeError("column is sealed")
        self._block[self._fill] = row  # copies: callers may reuse their buffers
        self._fill += 1
        self.count += 1
        if self._fill == self.rows:
            block = self._block
            self._block = np.empty_like(block)  # the full block is never written again
            self._fill = 0
            self._submit(block, self.rows)
            for follower in self.followers:
                follower.source_block_full(block)

    def seal(self) -> None:
        """No more rows: hand the last, partial chunk to the compressor too.

        Sealing every column of an episode before finishing any lets their tails compress while
        the caller waits for the first one.
        """
        if self._fill == 0 or self._sealed:
            return
        # Shorter than one chunk: the chunk shrinks to the data (HDF5 chunks of fixed-size
        # datasets may not exceed the dataset); nothing was submitted yet.
        rows = self.count if self.count < self.rows else self.rows
        if self.count < self.rows:
            self.rows = self.count
        self._submit(self._block[: self._fill], rows)
        self._sealed = True

    def finish(self) -> StoredColumn | DeferredColumn:
        """All rows as compressed chunks (seals the column, waits for the background work), or
        as raw blocks with a deferred compressor."""
        if self.count == 0:
            raise ValueError("empty column")
        self.seal()
        if self.compressor.deferred:
            jobs = [job.args for job in self._chunks]
            return DeferredColumn(self.row_shape, self.dtype, self.count, self.rows, self.shuffle, jobs)
        self.compressor.flush()
        chunks = [self.compressor.result(job) for job in self._chunks]
        return StoredColumn(self.row_shape, self.dtype, self.count, self.rows, self.shuffle, chunks)

    def cancel(self) -> None:
        """Drop the rows (discarded episode)."""
        for job in self._chunks:
            job.cancelled = True
        self._chunks = []
        self._fill = 0
        self.count = 0


class ShiftedColumn(ChunkedColumn):
    """The ``obs`` column, built from the ``next_obs`` column while each obs is the previous ``next_obs``.

    Within an episode ``obs[t] == next_obs[t - 1]``, so copying every observation twice is wasted
    work on the recording thread. While the caller passes the previous ``next_obs`` again
    (:meth:`add`), this column only counts rows; each full block of the source yields this
    column's chunk ``[row before the block, block[:-1]]`` (compressed in the background). The
    first observation that differs (:meth:`detach`) turns it into a plain column: rows recorded so
    far are copied out of the source's current block, later rows are appended.

    Args:
        source: the ``next_obs`` column of the same key (same row shape, dtype and chunking).
        first: the episode's first observation (``obs[0]``).
    """

    def __init__(self, source: ChunkedColumn, first: np.ndarray) -> None:
        super().__init__(source.row_shape, source.dtype, compressor=source.compressor, shuffle=source.shuffle)
        self.rows = source.rows  # the same chunking (image columns: one frame per chunk)
        self._block = np.empty_like(source._block)
        self.source = source
        self.derived = True
        # the row preceding the source's current block: obs[0] at first, then the source's
        # last full row (a view into a block that is never written again)
        self._carry = np.array(first, dtype=self.dtype)
        source.followers.append(self)

    def append_previous(self) -> None:
        """Add a row equal to the source's last row (``obs[0]`` for the first one)."""
        self.count += 1

    def last_source_row(self) -> np.ndarray:
        """The source's last row (what :meth:`append_previous` adds), as stored."""
        fill = self.source._fill
        return self.source._block[fill - 1] if fill else self._carry

    def add(self, row: np.ndarray, previous: np.ndarray | None) -> None:
        """Add ``row``; ``previous`` is the object last appended to the source (identity: no copy)."""
        if self.derived and (row is previous or np.array_equal(row, self.last_source_row())):
            self.count += 1
        else:
            self.append(row)

    def source_block_full(self, block: np.ndarray) -> None:
        """The source filled ``block``: this column's rows over the same span are ready."""
        carry, self._carry = self._carry, block[-1]
        self._submit(block[:-1], self.rows, head=carry)

    def detach(self) -> None:
        """Become a plain column: copy the rows not yet in a chunk out of the source."""
        if not self.derived:
            return
        self.derived = False
        self.source.followers.remove(self)
        fill = self.count % self.rows  # == the source's fill: both columns have count rows
        if fill:
            self._block[0] = self._carry
            self._block[1:fill] = self.source._block[: fill - 1]
        self._fill = fill

    def append(self, row: np.ndarray) -> None:
        self.detach()
        super().append(row)

    def seal(self) -> None:
        self.detach()
        super().seal()


@dataclass(eq=False)
class _FinishedColumn:
    """Shape and chunking of a finished column: ``count`` rows stored ``rows`` per chunk."""

    row_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    count: int
    rows: int
    shuffle: bool


@dataclass(eq=False)
class StoredColumn(_FinishedColumn):
    """A finished column: compressed chunks ready to be written (any number of times)."""

    chunks: list[bytes]

    @property
    def nbytes(self) -> int:
        """Compressed size."""
        return sum(len(c) for c in self.chunks)

    def write(self, group: h5py.Group, name: str) -> h5py.Dataset:
        """Create ``group[name]`` with gzip (+ shuffle) filters and store the chunks directly."""
        ds = group.create_dataset(
            name,
            shape=(self.count, *self.row_shape),
            dtype=self.dtype,
            chunks=(self.rows, *self.row_shape),
            compression=COMPRESSION,
            compression_opts=COMPRESSION_LEVEL,
            shuffle=self.shuffle,
        )
        zeros = (0,) * len(self.row_shape)
        for i, chunk in enumerate(self.chunks):
            ds.id.write_direct_chunk((i * self.rows, *zeros), chunk)
        return ds

    def read(self) -> np.ndarray:
        """Decompress (for checks and tests)."""
        parts = []
        for chunk in self.chunks:
            payload = zlib.decompress(chunk)
            if self.shuffle:
                n = len(payload) // self.dtype.itemsize
                payload = np.frombuffer(payload, np.uint8).reshape(self.dtype.itemsize, n).T.tobytes()
            parts.append(np.frombuffer(payload, self.dtype).reshape(-1, *self.row_shape))
        return np.concatenate(parts)[: self.count]


@dataclass(eq=False)
class DeferredColumn(_FinishedColumn):
    """A finished column whose chunks are still raw blocks (``deflate_chunk`` arguments).

    Sent to the publishing process (the blocks travel out of band, see
    :mod:`gail_robot.data.publish_process`), which compresses them there: the recording process
    then runs no compression at all, so no thread competes with its loop for the GIL.
    """

    jobs: list[tuple[Any, ...]]

    def compress(self) -> StoredColumn:
        """The same chunks :meth:`ChunkedColumn.finish` would have produced."""
        chunks = [deflate_chunk(*args) for args in self.jobs]
        return StoredColumn(self.row_shape, self.dtype, self.count, self.rows, self.shuffle, chunks)
