"""Event-id deduplication for sealing, vectorised: each event id kept once per revision.

Event ids (canonical UUID strings, as the ChainEvent contract has them) become 16-byte integers, and
the row kept of each id is the first by a caller's order (sealed rows before staged ones, then the
lowest Kafka position), so any chunking of the staged files keeps the same rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ketenstroom.errors import StorageError

_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_UUID_HEX_POSITIONS = [i for i in range(36) if i not in (8, 13, 18, 23)]


def id_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Event ids (canonical UUID strings, as the ChainEvent contract has them) as an (n, 2) uint64 array.

    Vectorised: 16 bytes a row instead of a Python object, so a period of millions of events is
    deduplicated in a few hundred MB.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.empty((0, 2), dtype=np.uint64)
    arr = arr.cast(pa.string())
    if arr.null_count:
        raise StorageError("a snapshot row has no event_id")
    lo, hi = (v.as_py() for v in pc.min_max(pc.binary_length(arr)).values())
    if lo != 36 or hi != 36:
        raise StorageError("a snapshot row's event_id is not a canonical UUID string")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    text = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=36 * len(arr), offset=int(offsets[0]))
    nibbles = _HEX[text.reshape(len(arr), 36)[:, _UUID_HEX_POSITIONS]]
    if (nibbles == 255).any():
        raise StorageError("a snapshot row's event_id is not a canonical UUID string")
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of 64-bit words


def _word(ids: np.ndarray) -> np.ndarray:
    """One 64-bit word per id from both halves (equal ids give equal words), so ids whose first halves
    agree -- sequential ids, as the sink bench's -- do not all look repeated. Wraps modulo 2**64."""
    word: np.ndarray = ids[:, 0] * _MIX + ids[:, 1]
    return word


def _repeated_rows(words: np.ndarray) -> np.ndarray | None:
    """The rows whose word occurs more than once, in row order (ties keep the earlier row); None when
    every word is distinct, the common case, with no index array made."""
    sorted_words = np.sort(words)
    same = sorted_words[1:] == sorted_words[:-1]
    if not same.any():
        return None
    repeated = np.unique(sorted_words[1:][same])
    del sorted_words, same
    rows: np.ndarray = np.nonzero(np.isin(words, repeated))[0]
    return rows


def keep_first(ids: np.ndarray, *order: np.ndarray) -> np.ndarray:
    """``first_occurrences`` in little memory: sort a 64-bit word of each id (``_word``, 8 bytes a row)
    to find the values that repeat, and resolve just the rows holding them exactly. Millions of distinct
    ids cost a few tens of bytes a row instead of a full multi-key sort; with no repeated value (the
    common case) no index array is made at all."""
    n = len(ids)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    rows = _repeated_rows(_word(ids))
    if rows is None:
        return keep
    keep[rows] = first_occurrences(ids[rows], *(key[rows] for key in order))
    return keep


def keep_first_parts(ids: list[np.ndarray], rank: list[int], positions: list[np.ndarray]) -> np.ndarray:
    """``keep_first`` over the concatenation of per-file parts (ids, the part's rank, Kafka positions),
    without making that concatenation: only a 64-bit word of every id is gathered (8 bytes a row, plus
    its sorted copy), and the full keys only of the rows whose words repeat. Sealing a
    period of millions of rows so holds the files' ids once, not twice."""
    sizes = [len(part) for part in ids]
    n = sum(sizes)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    high = np.empty(n, dtype=np.uint64)
    starts = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    for part, start, end in zip(ids, starts[:-1], starts[1:], strict=True):
        high[start:end] = _word(part)
    rows = _repeated_rows(high)
    del high
    if rows is None:
        return keep
    full = np.empty((len(rows), 2), dtype=np.uint64)
    ranks = np.empty(len(rows), dtype=np.int64)
    kafka = np.empty(len(rows), dtype=np.int64)
    bounds = np.searchsorted(rows, starts)  # rows[bounds[p]:bounds[p + 1]] fall in part p
    for p in range(len(sizes)):
        lo, hi = bounds[p], bounds[p + 1]
        if hi > lo:
            local = rows[lo:hi] - starts[p]
            full[lo:hi], ranks[lo:hi], kafka[lo:hi] = ids[p][local], rank[p], positions[p][local]
    keep[rows] = first_occurrences(full, ranks, kafka)
    return keep


def first_occurrences(ids: np.ndarray, *order: np.ndarray) -> np.ndarray:
    """Mask over the rows of an (n, 2) id array: True for the one row kept of each id, the first by
    ``order`` (keys, most significant first; row position breaks ties)."""
    n = len(ids)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    minor_first = [np.arange(n), *reversed(order), ids[:, 1], ids[:, 0]]
    sorted_rows = np.lexsort(minor_first)
    ordered = ids[sorted_rows]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    keep[sorted_rows[starts]] = True
    return keep
