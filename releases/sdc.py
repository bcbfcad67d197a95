"""Disclosure control for released tables: pure functions over numpy arrays, one per rule.

* **Cell key** (the ABS/ONS idea): every unit (a person, case, crime, execution) gets a *record key*,
  ``HMAC-SHA256(cell-key secret, pseudonym)`` read as a 60-bit number (its first 15 hex digits) modulo
  2**48; a cell's key is the sum of its distinct units' record keys modulo 2**48, read as a draw ``u``
  in [0, 1). The same set of units gives the same draw in every table, rerun and revision; one unit
  more or less gives a fresh, independent draw. The secret comes from settings and is never written.
  Cells count distinct 60-bit keys; a build refuses if two units ever share one.
* **Unbiased random rounding to base 5** (CBS "aselect afgerond"): a count ``n`` with remainder ``r``
  goes up to ``n - r + 5`` with probability ``r / 5`` and down to ``n - r`` otherwise, so
  ``E[rounded] = n`` and the error is at most 4. The draw is the cell key's ``u``: up iff ``u < r / 5``.
* **Threshold**: a statistic (median, percentile, share) over fewer than ``threshold`` units is
  suppressed (empty value, status ``.``, never 0).
* **Group disclosure**: within a group (all other dimensions fixed), when one category of a sensitive
  dimension holds at least ``share`` of the group's units, the group's category cells are suppressed.
* **Secondary suppression**: in every additive relation (a total and its parts along one dimension, the
  others fixed) either nothing or at least two cells are suppressed, so no suppressed cell can be
  recomputed from published ones. ``recomputable`` is the independent check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UID_BITS = 60  # a unit's record key as read from its HMAC: the first 15 hex digits (fits a signed 64-bit int)
KEY_BITS = 48  # the part that is summed into a cell key: the uid modulo 2**48
KEY_MOD = 1 << KEY_BITS
BASE = 5


def record_key(secret: bytes, unit: str) -> int:
    """One unit's record key (the reference the SQL version in ``releases.engine`` is tested against)."""
    return record_uid(secret, unit) % KEY_MOD


def record_uid(secret: bytes, unit: str) -> int:
    """The unit's 60-bit id: distinct units get distinct ids (checked per build), so cells count ids."""
    return int(hmac.new(secret, unit.encode(), hashlib.sha256).hexdigest()[: UID_BITS // 4], 16)


def cell_draw(record_key_sums: np.ndarray) -> np.ndarray:
    """A cell's draw in [0, 1) from the sum of its units' record keys (reduced mod 2**48)."""
    return np.mod(np.asarray(record_key_sums, dtype=np.int64), KEY_MOD).astype(np.float64) / float(KEY_MOD)


def round_probabilities(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(down value, up value, probability of rounding up) for each count."""
    n = np.asarray(counts, dtype=np.int64)
    r = np.mod(n, BASE)
    down = n - r
    return down, down + np.where(r > 0, BASE, 0), r / BASE


def random_round(counts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Round each count to a multiple of 5, up iff its draw is below ``remainder / 5``."""
    down, up, p_up = round_probabilities(counts)
    return np.where(np.asarray(draws) < p_up, up, down)


def below_threshold(units: np.ndarray, threshold: int) -> np.ndarray:
    """True where a statistic rests on fewer than ``threshold`` units and must not be published."""
    return np.asarray(units, dtype=np.int64) < threshold


def group_disclosure(groups: np.ndarray, counts: np.ndarray, share: float) -> np.ndarray:
    """True for every category cell of a group in which one category holds at least ``share`` of the
    group's units (the group's size is the sum of its category cells; empty groups are not flagged)."""
    groups = np.asarray(groups)
    counts = np.asarray(counts, dtype=np.int64)
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    _, inverse = np.unique(groups, return_inverse=True)
    totals = np.bincount(inverse, weights=counts)
    largest = np.zeros(len(totals))
    np.maximum.at(largest, inverse, counts)
    flagged = (totals > 0) & (largest >= share * totals)
    return flagged[inverse]


@dataclass(frozen=True)
class Relation:
    """An additive relation: ``values[total] == sum(values[parts])`` (indices into the cell arrays)."""

    total: int
    parts: tuple[int, ...]

    def cells(self) -> tuple[int, ...]:
        return (self.total, *self.parts)


def recomputable(suppressed: np.ndarray, relations: Sequence[Relation]) -> list[int]:
    """Suppressed cells whose value follows from published ones: the only suppressed cell of a relation
    (repeatedly, since a cell found so counts as known in the other relations it is in)."""
    known = ~np.asarray(suppressed, dtype=bool)
    found: list[int] = []
    changed = True
    while changed:
        changed = False
        for rel in relations:
            hidden = [c for c in rel.cells() if not known[c]]
            if len(hidden) == 1:
                known[hidden[0]] = True
                found.append(hidden[0])
                changed = True
    return sorted(found)


def secondary_suppression(
    suppressed: np.ndarray, relations: Sequence[Relation], values: np.ndarray
) -> np.ndarray:
    """Suppress further cells until no relation has exactly one suppressed cell: in such a relation the
    smallest published part (by true value, ties by position) goes too, or the total when every part
    is hidden. Returns the new mask; the cells added are ``result & ~suppressed``."""
    mask = np.asarray(suppressed, dtype=bool).copy()
    values = np.asarray(values, dtype=np.float64)
    changed = True
    while changed:
        changed = False
        for rel in relations:
            cells = rel.cells()
            hidden = [c for c in cells if mask[c]]
            if len(hidden) != 1:
                continue
            candidates = [c for c in rel.parts if not mask[c]] or [rel.total]
            pick = min(candidates, key=lambda c: (values[c], c))
            mask[pick] = True
            changed = True
    return mask
