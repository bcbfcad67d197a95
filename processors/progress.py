"""What a processor run did, per partner and per partition; one type for both runners.

Every input record ends curated, dead-lettered or dropped as a duplicate, so per partner
``records_in == curated + dead-lettered + duplicates``; ``position`` is the next offset to process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sized
from dataclasses import dataclass, field

from processors.transform import Curated, DeadLetter, RawRecord


@dataclass
class Reconciliation:
    records_in: dict[str, int] = field(default_factory=dict)
    curated: dict[str, int] = field(default_factory=dict)
    dead: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    position: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to process

    def reconciles(self) -> bool:
        return all(
            self.records_in.get(p, 0)
            == self.curated.get(p, 0) + sum(self.dead.get(p, {}).values()) + self.duplicates.get(p, 0)
            for p in self.records_in
        )

    def done(self, stop_at: dict[tuple[str, int], int], reached: Container[tuple[str, int]] = ()) -> bool:
        """Every partition processed up to its offset in ``stop_at`` (empty partitions count as done),
        or ``reached``: read to its end by the consumer, every record before it processed (a partition
        whose records a predecessor committed after ``stop_at`` was read has none left to process)."""
        return all(self.position.get(tp, 0) >= end or tp in reached for tp, end in stop_at.items() if end > 0)

    def add(
        self,
        partner_of: Callable[[str], str],
        records: Iterable[RawRecord],
        curated: Iterable[Curated],
        dead: Iterable[DeadLetter],
        duplicates: Iterable[RawRecord] = (),
    ) -> None:
        """Count one processed batch: ``curated`` were sent, ``duplicates`` dropped as seen before."""
        by_topic: Counter[str] = Counter()
        position: dict[tuple[str, int], int] = {}
        for r in records:
            by_topic[r.topic] += 1
            tp = (r.topic, r.partition)
            position[tp] = max(position.get(tp, 0), r.offset + 1)
        sent: dict[str, list[Curated]] = {}
        for item in curated:
            sent.setdefault(item.source.topic, []).append(item)
        self.count(partner_of, by_topic, position, sent, dead, duplicates)

    def count(
        self,
        partner_of: Callable[[str], str],
        records_in: Mapping[str, int],
        position: Mapping[tuple[str, int], int],
        curated: Mapping[str, Sized],
        dead: Iterable[DeadLetter],
        duplicates: Iterable[RawRecord] = (),
    ) -> None:
        """``add`` with the batch already counted per topic (``records_in``, ``curated``) and the next
        offset per partition (``position``): what the runner knows per run of a partition's records."""
        for tp, offset in position.items():
            if offset > self.position.get(tp, 0):
                self.position[tp] = offset
        _add(self.records_in, partner_of, records_in)
        _add(self.curated, partner_of, {topic: len(items) for topic, items in curated.items()})
        _add(self.duplicates, partner_of, Counter(r.topic for r in duplicates))
        for letter in dead:
            reasons = self.dead.setdefault(partner_of(letter.source.topic), {})
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1


def _add(totals: dict[str, int], partner_of: Callable[[str], str], by_topic: Mapping[str, int]) -> None:
    for topic, n in by_topic.items():
        partner = partner_of(topic)
        totals[partner] = totals.get(partner, 0) + n
