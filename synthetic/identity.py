"""Identity noise as it happens in the chain, and the truth about persons that tests compare against.

Three kinds (DOMAIN.md §2.3; issue 11), all drawn from hashes of ``(seed, case, person)`` so they never
consume the chain's random stream (the rest of an export is the same with and without them):

* **police before identification**: in a share of cases the police records (suspect registered, pv
  sent to OM) carry no SKN yet -- the identity was not established in the SKDB when the pv was made --
  only the BSN, when the person has one (a person without BSN is then not identified at all there);
* **BSN-only partners**: for a share of persons some partners (``bsn_only_partners``) deliver the BSN
  only, having no SKN for them on file;
* **conflicting pairs**: once in a while an OM registration carries the right SKN with the BSN of
  *another* person (a typing error). The other person is always one already delivered with their own
  SKN and BSN together, so the conflict is visible in the data (the BSN then sits between two SKNs),
  and no person takes part in two conflicts.

``IdentityTruth`` records per person index which kinds of records were written: SKN and BSN together
(a link), SKN only, BSN only. ``persons`` is the true number of persons identified in at least one
record; ``unlinkable`` counts persons delivered both by SKN only and by BSN only but never with both
together, whom no evidence can join (each resolves to two persons); ``conflicts`` the conflicting
pairs written. A linker following the rule of ``ketenstroom.identity`` finds ``persons + unlinkable``
persons and ``conflicts`` conflicts; one that merges conflicts blindly finds ``conflicts`` fewer.
Rows the producer rejects or spoils (``noise``) are not accounted for here: compare at ``noise=0``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthetic.persons import mix64

_SKN, _BSN, _LINKED, _CONFLICT = 1, 2, 4, 8
_SCALE = 1_000_000


@dataclass(frozen=True)
class IdentityNoise:
    """Shares of identity noise; ``IdentityNoise.none()`` switches it off."""

    police_without_skn: float = 0.15  # cases whose police records carry the BSN only
    bsn_only_partners: tuple[str, ...] = ("cjib", "reclassering")
    bsn_only_persons: float = 0.05  # persons those partners know by BSN only
    conflicts: float = 0.003  # OM registrations carrying another person's BSN

    @classmethod
    def none(cls) -> IdentityNoise:
        return cls(0.0, (), 0.0, 0.0)

    def scaled(self, factor: float) -> IdentityNoise:
        """The same kinds, each share times ``factor`` (``--identity-noise``: 1 is the default mix)."""
        return IdentityNoise(
            min(1.0, self.police_without_skn * factor),
            self.bsn_only_partners,
            min(1.0, self.bsn_only_persons * factor),
            min(1.0, self.conflicts * factor),
        )


@dataclass
class IdentityTruth:
    """What was written about each person (by index), kept as one byte per person of the population."""

    population: int
    seen: bytearray = field(init=False)
    conflict_records: list[str] = field(default_factory=list)
    _linked_recently: deque[int] = field(default_factory=lambda: deque(maxlen=512))

    def __post_init__(self) -> None:
        self.seen = bytearray(self.population)

    def report(self) -> dict[str, Any]:
        persons = unlinkable = 0
        for flags in self.seen:  # one pass over the population (not the rows): fine at any size
            if flags & (_SKN | _BSN | _LINKED):
                persons += 1
                if flags & _SKN and flags & _BSN and not flags & _LINKED:
                    unlinkable += 1
        return {
            "persons": persons,
            "unlinkable": unlinkable,
            "conflicts": len(self.conflict_records),
            "conflict_records": list(self.conflict_records),
        }


class IdentityNoiser:
    """Applies ``IdentityNoise`` to one case's events and keeps the ``IdentityTruth``."""

    def __init__(
        self, noise: IdentityNoise, *, seed: int, population: int, bsn_of: Callable[[int], str | None]
    ) -> None:
        self.noise = noise
        self.bsn_of = bsn_of
        self.base = mix64(seed ^ 0x1D_E7_17_00)
        self.truth = IdentityTruth(population)
        self._case = 0

    def _chance(self, *keys: int) -> float:
        h = self.base
        for key in keys:
            h = mix64(h ^ key)
        return (h % _SCALE) / _SCALE

    def apply(self, events: list[tuple[str, str, dict[str, Any]]], index: int | None) -> None:
        """Change the suspect fields of the case's events in place; ``index``: the suspect's person."""
        self._case += 1
        if index is None:
            return
        noise = self.noise
        police_unknown = self._chance(1, self._case) < noise.police_without_skn
        bsn_only = self._chance(2, index) < noise.bsn_only_persons
        seen = self.truth.seen
        for partner, rtype, values in events:
            who = values.get("suspect")
            if not who:
                continue
            skn, bsn = who.get("suspect.skn"), who.get("suspect.bsn")
            if bsn and (
                (partner == "politie" and police_unknown) or (partner in noise.bsn_only_partners and bsn_only)
            ):
                values["suspect"] = who = {**who, "suspect.skn": None}
                skn = None
            if partner == "om" and rtype == "INSCHRIJVING" and skn and self._conflict(index, values):
                continue
            if skn and bsn:
                seen[index] |= _LINKED
                if not seen[index] & _CONFLICT:
                    self.truth._linked_recently.append(index)
            elif skn:
                seen[index] |= _SKN
            elif bsn:
                seen[index] |= _BSN

    def _conflict(self, index: int, values: dict[str, Any]) -> bool:
        """Maybe give this OM registration another person's BSN; True when it did."""
        truth = self.truth
        if not truth._linked_recently or self._chance(3, self._case) >= self.noise.conflicts:
            return False
        other = truth._linked_recently[int(self._chance(4, self._case) * len(truth._linked_recently))]
        if other == index or truth.seen[index] & _CONFLICT or truth.seen[other] & _CONFLICT:
            return False
        their = self.bsn_of(other)
        if their is None:
            return False
        values["suspect"] = {**values["suspect"], "suspect.bsn": their}
        truth.seen[index] |= _CONFLICT | _SKN
        truth.seen[other] |= _CONFLICT
        truth.conflict_records.append(str(values["metadata.source_record_id"]))
        return True
