"""One person across the chain: SKN and BSN pseudonyms linked into persons. Pure pyarrow and numpy.

Every curated event carries the pseudonym of the SKN and of a valid BSN, each nullable (DOMAIN.md §2.3,
§6 item 2). A record carrying both is **evidence** that the two belong to one person; the evidence is a
table of distinct ``(skn, bsn)`` pseudonym pairs with the number of records and the earliest event time
that carried each pair (``link_evidence``). No raw SKN or BSN is ever part of it: the pairs are the
processor's keyed HMACs, so the link state is exactly as sensitive as the rows it is derived from.

Persons are the connected components of the bipartite graph SKN -- BSN over the evidence (union-find
over integer codes, vectorised: ``components``). The resolved person id (``Identities.person_column``):

* a record with an SKN belongs to that SKN's person: the id **is** the SKN pseudonym. JustID issues one
  SKN per suspect, so an SKN is never re-attributed, and the ids of persons known by SKN never change;
* a record with only a BSN belongs to the person of the SKN that BSN was linked to; when it was never
  linked, the BSN pseudonym is the id (a person known only by BSN: one SKN-less component);
* a record with neither keeps the processor's ``person_pseudonym`` (rows written before both pseudonyms
  existed; usually null).

**Conflicts.** A component that joins two or more different SKNs (a BSN seen with SKN A in one record
and with SKN B in another: a typing error at a partner, or a double registration JustID has yet to
correct) is *not* merged: each SKN stays its own person, and every person of such a component is
flagged ``identity_conflict``. Each BSN of the component is attributed to **the SKN it was seen with in
the most records**; a tie goes to the SKN whose link was seen first (earliest event time), then to the
smallest pseudonym, so the rule gives one answer whatever the order of the input. The BSN-only records
follow their BSN. In a component with one SKN every BSN is linked to that SKN directly (the graph is
bipartite), so the rule needs no special case.

Which evidence counts is the caller's business (``ketenstroom.adapters.links``: the rows of the sealed
revisions a table is built from). The sink's person and chain tables and the releases' person counts
(KS0002, KS0005) resolve with the same evidence, so a published figure counts the persons of the
microdata.

**Packed pseudonyms.** The processor's pseudonyms are HMAC-SHA-256 digests written as 64 lowercase hex
characters. Evidence whose pseudonyms are all of that form is kept as their 32 bytes
(``pa.binary(32)``, ``pack``): half the memory, no string offsets, and fixed-width keys for the
group-bys, sorts and look-ups. The byte order of packed digests is the order of their hex strings, so
every rule above (the smallest pseudonym wins a tie) gives the same answer either way, and the ids
handed out are unpacked to the same strings. Any other pseudonym (rows written by tests, or by an older
processor) keeps the whole evidence it is folded with as strings: slower, the same persons.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_TS = pa.timestamp("ms", tz="UTC")
PACKED = pa.binary(32)  # an HMAC-SHA-256 pseudonym's digest: 64 hex characters as 32 bytes
EVIDENCE_SCHEMA = pa.schema(
    [
        ("skn_pseudonym", pa.string()),
        ("bsn_pseudonym", pa.string()),
        ("records", pa.int64()),
        ("first_time", _TS),
    ]
)
#: The same evidence with packed pseudonyms (``pack``): what the processor's HMACs give.
PACKED_EVIDENCE_SCHEMA = pa.schema(
    [
        ("skn_pseudonym", PACKED),
        ("bsn_pseudonym", PACKED),
        ("records", pa.int64()),
        ("first_time", _TS),
    ]
)

_HEX_DIGITS = b"0123456789abcdef"  # lowercase only: an uppercase digest would not unpack to itself


def _mask(valid: np.ndarray) -> pa.Buffer | None:
    """A validity bitmap (offset 0) for ``valid``; None when every value is valid."""
    return None if valid.all() else pa.array(valid, pa.bool_()).buffers()[1]


def pack(values: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """64-character lowercase hex strings as their 32 bytes (``PACKED``), nulls kept; ``None`` when any
    non-null value is not such a string (then the caller keeps strings)."""
    arr = _string(values)
    n = len(arr)
    if n == 0:
        return pa.array([], PACKED)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    lengths = np.diff(offsets)
    valid = np.asarray(arr.is_valid()) if arr.null_count else np.ones(n, dtype=bool)
    # nulls must take no bytes, so the data buffer is the valid values back to back, 64 bytes each
    if not (np.all(lengths[valid] == 64) and not np.any(lengths[~valid])):
        return None
    count = int(offsets[-1] - offsets[0])
    data = arr.buffers()[2]
    text = b"" if data is None or count == 0 else data.slice(int(offsets[0]), count).to_pybytes()
    if text.translate(None, _HEX_DIGITS):  # anything but lowercase hex digits left: not an HMAC's hex
        return None
    packed = np.frombuffer(binascii.unhexlify(text), dtype=np.uint8)
    if len(packed) != n * 32:  # some nulls: valid values to their rows, nulls as zero bytes
        full = np.zeros((n, 32), dtype=np.uint8)
        full[valid] = packed.reshape(-1, 32)
        packed = full.reshape(-1)
    return pa.Array.from_buffers(PACKED, n, [_mask(valid), pa.py_buffer(packed)])


def unpack(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Packed pseudonyms back to their 64 lowercase hex characters (strings pass unchanged)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if arr.type != PACKED:
        return _string(arr)
    n = len(arr)
    if n == 0:
        return pa.array([], pa.string())
    data = arr.buffers()[1]
    assert data is not None  # a non-empty fixed-size binary array has a data buffer
    raw = np.frombuffer(data, dtype=np.uint8, count=n * 32, offset=arr.offset * 32)
    valid = np.asarray(arr.is_valid()) if arr.null_count else np.ones(n, dtype=bool)
    lengths = np.where(valid, 64, 0).astype(np.int32)  # a null takes no bytes, as Arrow builds them
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    kept = raw if valid.all() else raw.reshape(n, 32)[valid].reshape(-1)
    text = binascii.hexlify(kept.tobytes())  # lowercase, as the processor writes them
    return pa.Array.from_buffers(pa.string(), n, [_mask(valid), pa.py_buffer(offsets), pa.py_buffer(text)])


def _unpacked(evidence: pa.Table) -> pa.Table:
    """Evidence with string pseudonyms (packed ones unpacked)."""
    if evidence.schema.field("skn_pseudonym").type != PACKED:
        return evidence.cast(EVIDENCE_SCHEMA)
    return pa.table(
        {
            "skn_pseudonym": unpack(evidence["skn_pseudonym"]),
            "bsn_pseudonym": unpack(evidence["bsn_pseudonym"]),
            "records": evidence["records"],
            "first_time": evidence["first_time"],
        }
    ).cast(EVIDENCE_SCHEMA)


def _normal(evidence: pa.Table) -> pa.Table:
    """Evidence in one of the two schemas: packed if its pseudonyms are, else strings."""
    if evidence.schema.field("skn_pseudonym").type == PACKED:
        return evidence.cast(PACKED_EVIDENCE_SCHEMA)
    return evidence.cast(EVIDENCE_SCHEMA)


def _string(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.cast(pa.string()) if arr.type != pa.string() else arr


def identifiers(events: pa.Table) -> tuple[pa.Array, pa.Array]:
    """The SKN and BSN pseudonym of each event; rows from before both were carried are read from
    ``person_pseudonym`` and its source (an SKN- or BSN-based person pseudonym is the same HMAC)."""
    n = events.num_rows
    if "skn_pseudonym" in events.column_names and "bsn_pseudonym" in events.column_names:
        return _string(events["skn_pseudonym"]), _string(events["bsn_pseudonym"])
    if "person_pseudonym" not in events.column_names:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    person = _string(events["person_pseudonym"])
    if "person_pseudonym_source" not in events.column_names:
        return person, pa.nulls(n, pa.string())
    source = _string(events["person_pseudonym_source"])
    none = pa.scalar(None, pa.string())
    skn = pc.if_else(pc.fill_null(pc.equal(source, "BSN"), False), none, person)
    bsn = pc.if_else(pc.fill_null(pc.equal(source, "BSN"), False), person, none)
    return skn, bsn


def link_evidence(events: pa.Table) -> pa.Table:
    """Distinct (SKN, BSN) pseudonym pairs over the events carrying both: records and first event time,
    sorted by the pair. Packed (``PACKED_EVIDENCE_SCHEMA``) when every pseudonym is an HMAC's hex."""
    skn, bsn = identifiers(events)
    both = pc.and_(pc.is_valid(skn), pc.is_valid(bsn))
    skn, bsn = skn.filter(both), bsn.filter(both)
    packed_skn = pack(skn)
    packed_bsn = pack(bsn) if packed_skn is not None else None
    if packed_skn is not None and packed_bsn is not None:
        skn, bsn = packed_skn, packed_bsn
    pairs = pa.table(
        {
            "skn_pseudonym": skn,
            "bsn_pseudonym": bsn,
            "event_time": _as_ts(events["event_time"]).filter(both),
        }
    )
    return _sorted(_aggregate(pairs, count="event_time", first="event_time", mode="count"))


MERGE_ROWS = 500_000  # evidence rows gathered before they are folded into the running aggregate


def merge_evidence(parts: Iterable[pa.Table], fold_rows: int = MERGE_ROWS) -> pa.Table:
    """Evidence tables combined: records summed, the earliest first time kept, sorted by the pair.

    Folded as they come (sums and minima are associative), so memory holds the distinct pairs plus
    ``fold_rows`` more, not every file's pairs at once: a period's files repeat a person's pair in each
    file that has one of its events. Packed while every part is; one part with other pseudonyms turns
    the whole into strings (the same pairs, the same order)."""
    merged: pa.Table | None = None
    pending: list[pa.Table] = []
    rows = 0
    for part in parts:
        if part.num_rows:
            pending.append(_normal(part))
            rows += part.num_rows
        if rows >= fold_rows:
            merged = _fold(merged, pending)
            pending, rows = [], 0
    if pending or merged is None:
        merged = _fold(merged, pending)
    return _sorted(merged)


def _fold(merged: pa.Table | None, pending: list[pa.Table]) -> pa.Table:
    tables = ([merged] if merged is not None else []) + pending
    if not tables:
        return EVIDENCE_SCHEMA.empty_table()
    if any(t.schema.field("skn_pseudonym").type != PACKED for t in tables):
        tables = [_unpacked(t) for t in tables]
    combined = pa.concat_tables(tables)
    del tables, pending[:]  # (the caller's list: let the parts go before the group-by allocates)
    return _aggregate(combined, count="records", first="first_time", mode="sum")


def _as_ts(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.cast(_TS)


def _aggregate(pairs: pa.Table, *, count: str, first: str, mode: str) -> pa.Table:
    """Per distinct pair, records and first time (unsorted: sorting is done once, at the end)."""
    if pairs.num_rows == 0:
        return EVIDENCE_SCHEMA.empty_table()
    keys = ["skn_pseudonym", "bsn_pseudonym"]
    grouped = pairs.group_by(keys, use_threads=False).aggregate([(count, mode), (first, "min")])
    out = pa.table(
        {
            "skn_pseudonym": grouped["skn_pseudonym"],
            "bsn_pseudonym": grouped["bsn_pseudonym"],
            "records": grouped[f"{count}_{mode}"].cast(pa.int64()),
            "first_time": grouped[f"{first}_min"],
        }
    )
    return _normal(out)


def _sorted(evidence: pa.Table) -> pa.Table:
    return evidence.sort_by([("skn_pseudonym", "ascending"), ("bsn_pseudonym", "ascending")]).combine_chunks()


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by edges ``left[i] -- right[i]``: per node the smallest
    node index of its component. Min-label propagation with pointer jumping, each round vectorised."""
    label = np.arange(n, dtype=np.int64)
    if len(left) == 0:
        return label
    while True:
        hooked = np.minimum(label[left], label[right])
        new = label.copy()
        np.minimum.at(new, left, hooked)
        np.minimum.at(new, right, hooked)
        while True:  # pointer jumping: a label is a node of the same component with a smaller index
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return label
        label = new


@dataclass(frozen=True)
class Identities:
    """Persons resolved from link evidence: which person each linked BSN belongs to, and the conflicts.

    ``bsn`` and ``person`` are packed (``PACKED``) when the evidence was; ``person_columns`` gives
    strings either way."""

    bsn: pa.Array  # every BSN pseudonym seen together with an SKN, sorted
    person: pa.Array  # the person (an SKN pseudonym) each of those BSNs belongs to
    conflicted: pa.Array  # persons whose component joins two or more SKNs, sorted (strings)
    links: int  # distinct (SKN, BSN) pairs
    conflicts: int  # components joining two or more SKNs

    @classmethod
    def resolve(cls, evidence: pa.Table) -> Identities:
        """Components over the evidence, the BSNs attributed by the written-down rule (module docstring)."""
        if evidence.num_rows == 0:
            empty = pa.array([], pa.string())
            return cls(empty, empty, empty, 0, 0)
        evidence = _normal(evidence)
        skn, bsn = evidence["skn_pseudonym"].combine_chunks(), evidence["bsn_pseudonym"].combine_chunks()
        skns, bsns = pc.unique(skn).sort(), pc.unique(bsn).sort()
        n_skns = len(skns)
        s = pc.index_in(skn, value_set=skns).to_numpy().astype(np.int64)
        b = pc.index_in(bsn, value_set=bsns).to_numpy().astype(np.int64) + len(skns)
        del bsn
        label = components(len(skns) + len(bsns), s, b)
        del s
        skn_label = label[: len(skns)]
        per_component = np.bincount(skn_label, minlength=len(label))
        in_conflict = per_component[skn_label] >= 2
        conflicted = unpack(skns.filter(pa.array(in_conflict)))
        conflicts = int(np.count_nonzero(per_component >= 2))
        del label, skn_label, per_component, in_conflict, skns
        # each BSN to the SKN it was seen with most, then first, then the smallest pseudonym (packed
        # digests sort as their hex strings do)
        ranked = pa.table(
            {
                "b": pa.array(b),
                "records": evidence["records"],
                "first_time": evidence["first_time"],
                "skn": skn,
            }
        ).sort_by(
            [
                ("b", "ascending"),
                ("records", "descending"),
                ("first_time", "ascending"),
                ("skn", "ascending"),
            ]
        )
        del b, skn
        order = ranked["b"].to_numpy()
        first = np.concatenate([[True], order[1:] != order[:-1]])
        chosen = ranked.filter(pa.array(first))
        del ranked, order, first
        return cls(
            bsn=bsns.take(pa.array(chosen["b"].to_numpy() - n_skns)),
            person=chosen["skn"].combine_chunks(),
            conflicted=conflicted,
            links=evidence.num_rows,
            conflicts=conflicts,
        )

    @classmethod
    def from_events(cls, events: pa.Table) -> Identities:
        return cls.resolve(link_evidence(events))

    def person_column(self, events: pa.Table) -> pa.Array:
        """The resolved person id of every event: its SKN, else its BSN's person, else its BSN, else the
        processor's ``person_pseudonym``."""
        return self.person_columns(events)[0]

    def person_columns(self, events: pa.Table) -> tuple[pa.Array, pa.Array]:
        """``person_column`` and what the id is derived from: SKN, BSN (a person known only by BSN), or
        the processor's ``person_pseudonym_source`` for rows without either pseudonym."""
        skn, bsn = identifiers(events)
        n = events.num_rows
        # only records without an SKN are looked up (most records carry one): hash the rest as nulls
        bsn_only = pc.and_(pc.is_null(skn), pc.is_valid(bsn))
        if len(self.bsn) and pc.any(bsn_only).as_py():
            wanted = pc.if_else(bsn_only, bsn, pa.scalar(None, pa.string()))
            known, person = self.bsn, self.person
            if known.type == PACKED:
                packed = pack(wanted)
                if packed is None:  # these events' pseudonyms are not HMAC hex: compare as strings
                    known, person = self._strings
                else:
                    wanted = packed
            linked = unpack(pc.take(person, pc.index_in(wanted, value_set=known)))
        else:
            linked = pa.nulls(n, pa.string())
        names = events.column_names
        fallback = (
            _string(events["person_pseudonym"]) if "person_pseudonym" in names else pa.nulls(n, pa.string())
        )
        fallback_source = (
            _string(events["person_pseudonym_source"])
            if "person_pseudonym_source" in names
            else pa.nulls(n, pa.string())
        )
        none = pa.scalar(None, pa.string())
        source = pc.coalesce(
            pc.if_else(pc.or_(pc.is_valid(skn), pc.is_valid(linked)), "SKN", none),
            pc.if_else(pc.is_valid(bsn), "BSN", none),
            pc.if_else(pc.is_valid(fallback), fallback_source, none),
        )
        return pc.coalesce(skn, linked, bsn, fallback), source

    def resolved(self, events: pa.Table) -> pa.Table:
        """``events`` with ``person_pseudonym`` and ``person_pseudonym_source`` replaced by the resolved
        person and what its id derives from, and the SKN and BSN pseudonyms dropped: smaller, and
        resolving it again gives the same persons (a resolved id is an SKN, or a BSN never linked)."""
        person, source = self.person_columns(events)
        kept = events.drop_columns(
            [
                c
                for c in ("skn_pseudonym", "bsn_pseudonym", "person_pseudonym", "person_pseudonym_source")
                if c in events.column_names
            ]
        )
        return kept.append_column("person_pseudonym", person).append_column("person_pseudonym_source", source)

    @cached_property
    def _strings(self) -> tuple[pa.Array, pa.Array]:
        """``bsn`` and ``person`` as strings (only for events whose pseudonyms are not packable)."""
        return unpack(self.bsn), unpack(self.person)

    def is_conflicted(self, persons: pa.Array | pa.ChunkedArray) -> pa.Array:
        return pc.fill_null(pc.is_in(_string(persons), value_set=self.conflicted), False)
