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

Which evidence counts is the caller's business (``sinks/tables.py``: the rows of the sealed revisions a
table is built from, ``sinks/links.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_TS = pa.timestamp("ms", tz="UTC")
EVIDENCE_SCHEMA = pa.schema(
    [
        ("skn_pseudonym", pa.string()),
        ("bsn_pseudonym", pa.string()),
        ("records", pa.int64()),
        ("first_time", _TS),
    ]
)


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
    """Distinct (SKN, BSN) pseudonym pairs over the events carrying both: records and first event time."""
    skn, bsn = identifiers(events)
    both = pc.and_(pc.is_valid(skn), pc.is_valid(bsn))
    pairs = pa.table(
        {
            "skn_pseudonym": skn.filter(both),
            "bsn_pseudonym": bsn.filter(both),
            "event_time": _as_ts(events["event_time"]).filter(both),
        }
    )
    return _aggregate(pairs, count="event_time", first="event_time", mode="count")


MERGE_ROWS = 500_000  # evidence rows gathered before they are folded into the running aggregate


def merge_evidence(parts: Iterable[pa.Table], fold_rows: int = MERGE_ROWS) -> pa.Table:
    """Evidence tables combined: records summed, the earliest first time kept.

    Folded as they come (sums and minima are associative; the result is sorted), so memory holds the
    distinct pairs plus ``fold_rows`` more, not every file's pairs at once: a period's files repeat a
    person's pair in each file that has one of its events."""
    merged: pa.Table | None = None
    pending: list[pa.Table] = []
    rows = 0
    for part in parts:
        if part.num_rows:
            pending.append(part.cast(EVIDENCE_SCHEMA))
            rows += part.num_rows
        if rows >= fold_rows:
            merged = _fold(merged, pending)
            pending, rows = [], 0
    if pending or merged is None:
        merged = _fold(merged, pending)
    return merged


def _fold(merged: pa.Table | None, pending: list[pa.Table]) -> pa.Table:
    tables = ([merged] if merged is not None else []) + pending
    if not tables:
        return EVIDENCE_SCHEMA.empty_table()
    return _aggregate(pa.concat_tables(tables), count="records", first="first_time", mode="sum")


def _as_ts(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.cast(_TS)


def _aggregate(pairs: pa.Table, *, count: str, first: str, mode: str) -> pa.Table:
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
    return out.sort_by([(k, "ascending") for k in keys]).cast(EVIDENCE_SCHEMA)


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
    """Persons resolved from link evidence: which person each linked BSN belongs to, and the conflicts."""

    bsn: pa.Array  # every BSN pseudonym seen together with an SKN, sorted
    person: pa.Array  # the person (an SKN pseudonym) each of those BSNs belongs to
    conflicted: pa.Array  # persons whose component joins two or more SKNs, sorted
    links: int  # distinct (SKN, BSN) pairs
    conflicts: int  # components joining two or more SKNs

    @classmethod
    def resolve(cls, evidence: pa.Table) -> Identities:
        """Components over the evidence, the BSNs attributed by the written-down rule (module docstring)."""
        if evidence.num_rows == 0:
            empty = pa.array([], pa.string())
            return cls(empty, empty, empty, 0, 0)
        evidence = evidence.cast(EVIDENCE_SCHEMA)
        skn, bsn = evidence["skn_pseudonym"].combine_chunks(), evidence["bsn_pseudonym"].combine_chunks()
        skns, bsns = pc.unique(skn).sort(), pc.unique(bsn).sort()
        s = pc.index_in(skn, value_set=skns).to_numpy().astype(np.int64)
        b = pc.index_in(bsn, value_set=bsns).to_numpy().astype(np.int64) + len(skns)
        label = components(len(skns) + len(bsns), s, b)
        skn_label = label[: len(skns)]
        per_component = np.bincount(skn_label, minlength=len(label))
        in_conflict = per_component[skn_label] >= 2
        conflicted = skns.filter(pa.array(in_conflict))
        # each BSN to the SKN it was seen with most, then first, then the smallest pseudonym
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
        order = ranked["b"].to_numpy()
        first = np.concatenate([[True], order[1:] != order[:-1]])
        chosen = ranked.filter(pa.array(first))
        return cls(
            bsn=bsns.take(pa.array(chosen["b"].to_numpy() - len(skns))),
            person=chosen["skn"].combine_chunks(),
            conflicted=conflicted,
            links=evidence.num_rows,
            conflicts=int(np.count_nonzero(per_component >= 2)),
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
            at = pc.index_in(pc.if_else(bsn_only, bsn, pa.scalar(None, pa.string())), value_set=self.bsn)
            linked = pc.take(self.person, at)
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

    def is_conflicted(self, persons: pa.Array | pa.ChunkedArray) -> pa.Array:
        return pc.fill_null(pc.is_in(_string(persons), value_set=self.conflicted), False)
