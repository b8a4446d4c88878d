"""Per-step datasets compressed chunk by chunk while the episode is still being recorded.

Compressing a whole Humanoid episode (1000 steps, ~7 MB) when it ends costs tens of milliseconds
of the recording loop. Instead each per-step dataset of the episode is cut into HDF5 chunks as the
rows arrive; a full chunk is shuffled and deflated by a background thread (``zlib`` releases the
GIL) and, when the episode is saved, the finished chunks are stored with
``write_direct_chunk`` — byte-for-byte what HDF5's own ``shuffle`` + ``gzip`` filters would write,
so every HDF5 reader decodes them. Only the last, partial chunk is compressed at save time.
"""

from __future__ import annotations

import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np

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


def deflate_chunk(block: np.ndarray, rows: int, shuffle: bool, level: int = COMPRESSION_LEVEL) -> bytes:
    """One stored chunk: ``block`` padded to ``rows`` rows, shuffled, zlib-compressed.

    Args:
        block: ``(k, *row_shape)`` with ``k <= rows``.
        rows: rows per chunk of the dataset (edge chunks are stored full size).
        shuffle: apply the shuffle filter first.
        level: deflate level.
    """
    if len(block) < rows:
        pad = np.zeros((rows - len(block), *block.shape[1:]), dtype=block.dtype)
        block = np.concatenate([block, pad])
    raw = np.ascontiguousarray(block)
    payload = hdf5_shuffle(raw) if shuffle else raw.tobytes()
    return zlib.compress(payload, level)


class ChunkedColumn:
    """Rows of one per-step dataset (``actions``, ``states``, ``obs/<key>``, ...).

    Args:
        row_shape: shape of one row.
        dtype: stored dtype.
        image: camera frames: one frame per chunk, no shuffle.
        pool: executor for background compression (None: compress in the calling thread).
        shuffle: apply HDF5's shuffle filter before deflate.
    """

    def __init__(
        self,
        row_shape: tuple[int, ...],
        dtype: Any,
        image: bool = False,
        pool: ThreadPoolExecutor | None = None,
        shuffle: bool = SHUFFLE,
    ) -> None:
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        row_bytes = max(1, int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize)
        self.rows = 1 if image else max(1, CHUNK_BYTES // row_bytes)
        self.shuffle = shuffle and not image and self.dtype.itemsize > 1
        self.pool = pool
        self._block = np.empty((self.rows, *self.row_shape), dtype=self.dtype)
        self._fill = 0  # rows in _block
        self._sealed = False
        self._chunks: list[Future[bytes] | bytes] = []
        self.count = 0

    def append(self, row: np.ndarray) -> None:
        """Add one row (cast to the column's dtype; the shape must be ``row_shape``)."""
        if self._sealed:
            raise RuntimeError("column is sealed")
        self._block[self._fill] = row  # copies: callers may reuse their buffers
        self._fill += 1
        self.count += 1
        if self._fill == self.rows:
            block = self._block
            self._block = np.empty_like(block)
            self._fill = 0
            if self.pool is not None:
                self._chunks.append(self.pool.submit(deflate_chunk, block, self.rows, self.shuffle))
            else:
                self._chunks.append(deflate_chunk(block, self.rows, self.shuffle))

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
        tail = self._block[: self._fill]
        if self.pool is not None:
            self._chunks.append(self.pool.submit(deflate_chunk, tail, rows, self.shuffle))
        else:
            self._chunks.append(deflate_chunk(tail, rows, self.shuffle))
        self._sealed = True

    def finish(self) -> StoredColumn:
        """All rows as compressed chunks (seals the column, waits for the background work)."""
        if self.count == 0:
            raise ValueError("empty column")
        self.seal()
        chunks = [c.result() if isinstance(c, Future) else c for c in self._chunks]
        return StoredColumn(self.row_shape, self.dtype, self.count, self.rows, self.shuffle, chunks)

    def cancel(self) -> None:
        """Drop the rows (discarded episode)."""
        for c in self._chunks:
            if isinstance(c, Future):
                c.cancel()
        self._chunks = []
        self._fill = 0
        self.count = 0


class StoredColumn:
    """A finished column: compressed chunks ready to be written (any number of times)."""

    def __init__(
        self,
        row_shape: tuple[int, ...],
        dtype: np.dtype[Any],
        count: int,
        rows: int,
        shuffle: bool,
        chunks: list[bytes],
    ) -> None:
        self.row_shape = row_shape
        self.dtype = dtype
        self.count = count
        self.rows = rows
        self.shuffle = shuffle
        self.chunks = chunks

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
