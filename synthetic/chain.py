"""One case at a time through the chain: police -> (Halt) -> OM -> court -> CJIB / DJI / reclassering.

Each case is one registered crime. Most get a suspect (a person from ``persons``); juveniles with a light
offence often go to Halt, the rest (and failed Halt trajectories) go to the OM, which registers a case
with a new parketnummer and decides in the shares of DOMAIN.md §2.5.1. Dagvaardingen get a judgment,
a few an appeal; sanctions are executed by CJIB (money), DJI (detention) and reclassering (werkstraf,
toezicht). Lead times are days to months and every event is registered after it happened. With an
as-of date a case stops at the first step that would happen, or be registered, on or after that date:
an export made at the start of the as-of day holds nothing later.

Events come out as ``(partner, record type, values)`` with values keyed by *contract path*
(``"case.parketnummer"``, ``"metadata.event_time"``, ...); the writers map paths to each partner's
columns through its TOML mapping. Times are integers: minutes since day 1 of the proleptic Gregorian
calendar (``date.toordinal() * 1440 + minute``). Only counters are kept between cases: memory is flat.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from bisect import bisect
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import date
from itertools import count
from typing import Any

from synthetic import codes as C
from synthetic.identity import IdentityNoise, IdentityNoiser
from synthetic.persons import Person, mix64, person, pick_index, population_size

DAY = 1440
Event = tuple[str, str, dict[str, Any]]

#: Source record id prefix per (partner, record type): unique within a partner's export.
RECORD_IDS: dict[tuple[str, str], str] = {
    ("politie", "MISDRIJF"): "POL-M",
    ("politie", "VERDACHTE"): "POL-V",
    ("politie", "PV_INZENDING"): "POL-P",
    ("halt", "VERWIJZING"): "HALT-V",
    ("halt", "AFGEROND"): "HALT-A",
    ("om", "INSCHRIJVING"): "OM-I",
    ("om", "BESLISSING"): "OM-B",
    ("rechtspraak", "EERSTE_AANLEG"): "ZM-E",
    ("rechtspraak", "HOGER_BEROEP"): "ZM-H",
    ("cjib", "INNING_START"): "CJIB-I",
    ("cjib", "BETALING"): "CJIB-B",
    ("cjib", "VERVANGENDE_HECHTENIS"): "CJIB-V",
    ("dji", "INSTROOM"): "DJI-I",
    ("dji", "UITSTROOM"): "DJI-U",
    ("reclassering", "START"): "3RO-S",
    ("reclassering", "EINDE"): "3RO-E",
}


class _Weighted:
    """Fast weighted choice: cumulative weights and bisect (``random.choices`` is slow per call)."""

    def __init__(self, items: Sequence[tuple[str, float]]) -> None:
        self.codes = [c for c, _ in items]
        total = 0.0
        self.cum: list[float] = []
        for _, w in items:
            total += w
            self.cum.append(total)
        self.total = total

    def pick(self, rng: random.Random) -> str:
        return self.codes[min(bisect(self.cum, rng.random() * self.total), len(self.codes) - 1)]


_INCIDENTS = _Weighted([(code, float(v[5])) for code, v in C.INCIDENTS.items()])
_DECISIONS = _Weighted([(code, v[1]) for code, v in C.OM_DECISIONS.items()])
_OUTCOMES = _Weighted([(code, v[1]) for code, v in C.JUDGMENT_OUTCOMES.items()])
_ADULT = _Weighted(C.ADULT_SANCTIONS)
_JUVENILE = _Weighted(C.JUVENILE_SANCTIONS)
_ORGS = _Weighted([(code, v[1]) for code, v in C.RECLASSERING_ORGANISATIONS.items()])
_GEMEENTEN = tuple(C.MUNICIPALITIES)
_TECHNICAL = tuple(C.TECHNICAL_SEPOT_GROUNDS)
_POLICY = tuple(C.POLICY_SEPOT_GROUNDS)
_UNIT_LETTERS = "ABCDE"


class _NotYet(Exception):
    """The case's next step lies after the as-of moment: the case stops here."""


class Sanction:
    __slots__ = ("amount", "code", "conditional", "days", "hours")

    def __init__(
        self,
        code: str,
        days: int | None = None,
        hours: int | None = None,
        amount: float | None = None,
        conditional: bool = False,
    ) -> None:
        self.code, self.days, self.hours = code, days, hours
        self.amount, self.conditional = amount, conditional

    def fields(self) -> dict[str, Any]:
        return {
            "principal_sanction": self.code,
            "sanction_days": self.days,
            "sanction_hours": self.hours,
            "sanction_amount_eur": self.amount,
        }


class ChainGenerator:
    """Deterministic for a seed: case ``n`` depends only on the seed and the cases before it."""

    def __init__(
        self,
        *,
        seed: int,
        cases: int,
        start: date,
        days: int,
        as_of: date | None = None,
        identity: IdentityNoise | None = None,
    ) -> None:
        #: Minutes (see the module docstring) of the as-of date's local midnight: nothing at or after it.
        self.until = None if as_of is None else as_of.toordinal() * DAY
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
        self._random = self.rng.random
        self.seed = seed
        self.start = start
        self.start_day = start.toordinal()
        self.days = max(1, days)
        self.population = population_size(cases)
        self.identity = IdentityNoiser(
            identity or IdentityNoise.none(),
            seed=seed,
            population=self.population,
            bsn_of=lambda index: person(seed, index, start).bsn,
        )
        self._ids: dict[tuple[str, str], tuple[str, Iterator[int]]] = {}
        self._seq: dict[tuple[str, ...], int] = {}
        self._cjib = 0
        self.stats: dict[str, Counter[str]] = {
            "flow": Counter(),
            "om_decision": Counter(),
            "judgment": Counter(),
            "appeal": Counter(),
            "sanction": Counter(),
            "cjib": Counter(),
            "dji_title": Counter(),
            "reclassering": Counter(),
            "halt": Counter(),
        }

    # -- helpers -------------------------------------------------------------------------------------
    def _id(self, partner: str, rtype: str) -> str:
        counter = self._ids.get((partner, rtype))
        if counter is None:
            counter = self._ids[(partner, rtype)] = (RECORD_IDS[(partner, rtype)], count(1))
        # the seed is part of the id: exports of different seeds never share event ids
        return f"{counter[0]}-{self.seed}-{next(counter[1]):07d}"

    def _next(self, *key: str) -> int:
        """A per-key sequence that starts at a seeded offset (pv and parket sequences, ECLI numbers)."""
        n = self._seq.get(key)
        if n is None:
            n = mix64(zlib.crc32("|".join(key).encode()) ^ (self.seed << 32)) % 40_000
        n += 1
        self._seq[key] = n
        return n

    def _int(self, lo: int, hi: int) -> int:
        """Uniform in ``lo``..``hi-1`` (``randrange`` is several times slower)."""
        return lo + int(self._random() * (hi - lo))

    def _office(self, day: int) -> int:
        return day * DAY + 480 + int(self._random() * 600)  # 08:00 .. 17:59

    def _after(self, t: int, lo: int, hi: int) -> int:
        """A moment during office hours ``lo``..``hi-1`` days after ``t``."""
        return self._office(t // DAY + lo + int(self._random() * (hi - lo)))

    def _meta(self, partner: str, rtype: str, t: int, system: str) -> dict[str, Any]:
        # registered one to five days later in office hours: even a date-only column comes after the event
        registered = (t // DAY + 1 + int(self._random() * 5)) * DAY + 480 + int(self._random() * 600)
        return {
            "metadata.source_record_id": self._id(partner, rtype),
            "metadata.record_version": 1,
            "metadata.event_time": t,
            "metadata.registration_time": registered,
            "metadata.source_system": system,
        }

    def _amount(self, lo: int, hi: int) -> float:
        euros = self._int(lo, hi)
        if self.rng.random() < 0.2:
            return euros + self._int(1, 100) / 100
        return float(euros - euros % 10)

    # -- one case ------------------------------------------------------------------------------------
    def case(self) -> list[Event]:
        """The events of the next case, up to the as-of moment: later steps have not happened yet; with
        identity noise (``synthetic.identity``) applied."""
        self._suspect: int | None = None
        out: list[Event] = []
        with contextlib.suppress(_NotYet):  # the case stops where "now" is
            self._follow(out)
        self.identity.apply(out, self._suspect)
        return out

    def _add(self, out: list[Event], event: Event) -> None:
        """Append an event, or end the case (``_NotYet``) if it happens or is registered after ``until``."""
        values = event[2]
        if self.until is not None and (
            values["metadata.event_time"] >= self.until
            or values["metadata.registration_time"] >= self.until
            or values.get("first_interrogation_time", 0) >= self.until
        ):
            raise _NotYet
        out.append(event)

    def _follow(self, out: list[Event]) -> list[Event]:  # noqa: PLR0911, PLR0912, PLR0915 - one story
        r = self.rng
        stats = self.stats
        crime_day = self.start_day + self._int(0, self.days)
        t_crime = crime_day * DAY + self._int(0, DAY)
        incident = _INCIDENTS.pick(r)
        _label, article, light, ambtshalve, halt_group, _w = C.INCIDENTS[incident]
        solved = r.random() < 0.7
        p: Person | None = person(self.seed, pick_index(r, self.population), self.start) if solved else None
        self._suspect = p.index if p is not None else None
        home = p is not None and r.random() < 0.7
        gm = p.municipality if p is not None and home else _GEMEENTEN[self._int(0, len(_GEMEENTEN))]
        _name, unit, parket, court, hof = C.MUNICIPALITIES[gm]
        year = date.fromordinal(crime_day).year
        pv = (
            f"PL{unit}{_UNIT_LETTERS[self._int(0, 5)]}{self._int(1, 10)} "
            f"{year}{self._next('pv', unit, str(year)) % 1_000_000:06d}-{self._int(1, 10)}"
        )
        police_system = "BPS" if r.random() < 0.03 else "BVH"
        crime = self._meta("politie", "MISDRIJF", t_crime, police_system)
        crime.update(
            {
                "case.pv_number": pv,
                "incident": incident,
                "crime_municipality": gm,
                "ambtshalve": r.random() < ambtshalve,
            }
        )
        self._add(out, ("politie", "MISDRIJF", crime))
        stats["flow"]["crimes"] += 1
        if p is None:
            stats["flow"]["unsolved"] += 1
            return out

        who = p.fields()
        juvenile = (crime_day - p.birth_date.toordinal()) < 18 * 365.25
        t_suspect = t_crime + (0 if r.random() < 0.5 else self._int(1, 90) * DAY) + self._int(30, 600)
        t_interrogation = t_suspect + self._int(0, 36 * 60)
        suspect = self._meta("politie", "VERDACHTE", t_suspect, police_system)
        suspect["suspect"] = who
        suspect.update({"case.pv_number": pv, "first_interrogation_time": t_interrogation})
        self._add(out, ("politie", "VERDACHTE", suspect))
        stats["flow"]["suspects"] += 1
        stats["flow"]["juvenile_suspects"] += juvenile

        if juvenile and light and r.random() < 0.7:
            t_referral = self._after(t_interrogation, 3, 21)
            referral = self._meta("halt", "VERWIJZING", t_referral, "HALT")
            referral["suspect"] = who
            referral.update(
                {
                    "case.pv_number": pv,
                    "referrer": "POLITIE" if r.random() < 0.9 else "BOA",
                    "offence_group": halt_group,
                }
            )
            self._add(out, ("halt", "VERWIJZING", referral))
            t_done = self._after(t_referral, 30, 120)
            result = "POSITIEF" if r.random() < 0.85 else "NEGATIEF"
            done = self._meta("halt", "AFGEROND", t_done, "HALT")
            done["suspect"] = who
            done.update({"case.pv_number": pv, "outcome": result})
            self._add(out, ("halt", "AFGEROND", done))
            stats["halt"][result] += 1
            if result == "POSITIEF":
                return out
            t_report = self._after(t_done, 5, 30)
        elif r.random() < 0.08:
            stats["flow"]["police_only"] += 1  # e.g. a police sepot: the pv never reaches the OM
            return out
        else:
            t_report = self._after(t_interrogation, 3, 30 if juvenile else 60)
        report = self._meta("politie", "PV_INZENDING", t_report, police_system)
        report["suspect"] = who
        report["case.pv_number"] = pv
        self._add(out, ("politie", "PV_INZENDING", report))

        # -- OM ----------------------------------------------------------------------------------------
        if incident in C.TRAFFIC_INCIDENTS and r.random() < 0.5:
            parket = C.CVOM_PARKET
        t_registered = self._after(t_report, 1, 21)
        yy = date.fromordinal(t_registered // DAY).year % 100
        parketnummer = f"{parket}-{self._next('parket', parket, str(yy)) % 1_000_000:06d}-{yy:02d}"
        om_system = "GPS" if r.random() < 0.3 else "COMPAS"
        registered = self._meta("om", "INSCHRIJVING", t_registered, om_system)
        registered["metadata.registration_time"] = t_registered  # one column: inschrijfdatum
        registered["suspect"] = who
        registered.update({"case.parketnummer": parketnummer, "case.pv_number": pv, "offence": article})
        self._add(out, ("om", "INSCHRIJVING", registered))
        stats["flow"]["om_cases"] += 1
        decision = _DECISIONS.pick(r)
        t_decision = self._after(t_registered, 1, 80 if juvenile else 150)
        ground = None
        if decision == "SEPO":
            ground = _TECHNICAL[self._int(0, 3)] if r.random() < 0.4 else _POLICY[self._int(0, len(_POLICY))]
        elif decision == "VBSE":
            ground = _POLICY[self._int(0, len(_POLICY))]
        decided = self._meta("om", "BESLISSING", t_decision, om_system)
        # OM's export has one date for a decision (beslisdatum: event and registration alike); setting the
        # case's registration date here put the decision on the day the case was registered
        decided["metadata.registration_time"] = t_decision
        decided["suspect"] = who
        decided.update(
            {
                "case.parketnummer": parketnummer,
                "case.pv_number": pv,
                "decision": decision,
                "sepot_ground": ground,
                "offence": article,
            }
        )
        self._add(out, ("om", "BESLISSING", decided))
        stats["om_decision"][decision] += 1

        case = (who, parketnummer)
        if decision == "STRB":
            if r.random() < 0.85:
                self._collect(out, case, "SB", self._amount(150, 1500), t_decision)
            else:
                self._supervise(out, case, "WERKSTRAF", self._int(10, 121), t_decision)
            return out
        if decision == "TRAN":
            self._collect(out, case, "TR", self._amount(100, 1000), t_decision)
            return out
        if decision != "DAGV":
            return out

        # -- court -------------------------------------------------------------------------------------
        t_judgment = self._after(t_decision, 20, 200)
        if not light and r.random() < 0.15:  # voorlopige hechtenis, ends before the trial
            t_in = self._after(t_registered, 0, 3)
            t_out = min(self._after(t_in, 3, 90), t_judgment - DAY)
            self._detain(
                out,
                case,
                "VH",
                "JJI" if juvenile else "HVB",
                t_in,
                None,
                t_out,
                "SCHORSING" if r.random() < 0.85 else "OVERPLAATSING",
            )
        outcome = _OUTCOMES.pick(r)
        sanction = self._sanction(juvenile) if outcome == "SCHULDIG_STRAF" else None
        jyear = date.fromordinal(t_judgment // DAY).year
        judgment = self._meta("rechtspraak", "EERSTE_AANLEG", t_judgment, "GPS")
        judgment["suspect"] = who
        judgment.update(
            {
                "case.parketnummer": parketnummer,
                "court": court,
                "outcome": outcome,
                "case.ecli": f"ECLI:NL:{court}:{jyear}:{self._next('ecli', court, str(jyear))}",
                "conditional": sanction.conditional if sanction else None,
            }
        )
        if sanction is not None:
            judgment.update(sanction.fields())
        self._add(out, ("rechtspraak", "EERSTE_AANLEG", judgment))
        stats["judgment"][outcome] += 1
        t_final = t_judgment
        if outcome != "OVERIG" and r.random() < 0.05:
            u = r.random()
            if sanction is not None:
                appeal = (
                    "BEVESTIGD" if u < 0.55 else "VERNIETIGD_STRAF" if u < 0.9 else "VERNIETIGD_VRIJSPRAAK"
                )
            else:
                appeal = "BEVESTIGD" if u < 0.6 else "VERNIETIGD_STRAF"
            if appeal == "VERNIETIGD_STRAF":
                sanction = self._sanction(juvenile)
            elif appeal == "VERNIETIGD_VRIJSPRAAK":
                sanction = None
            t_final = self._after(t_judgment, 120, 400)
            ayear = date.fromordinal(t_final // DAY).year
            appealed = self._meta("rechtspraak", "HOGER_BEROEP", t_final, "GPS")
            appealed["suspect"] = who
            appealed.update(
                {
                    "case.parketnummer": parketnummer,
                    "court": hof,
                    "outcome": appeal,
                    "case.ecli": f"ECLI:NL:{hof}:{ayear}:{self._next('ecli', hof, str(ayear))}",
                }
            )
            if sanction is not None:
                appealed.update(sanction.fields())
            self._add(out, ("rechtspraak", "HOGER_BEROEP", appealed))
            stats["appeal"][appeal] += 1
        if sanction is None:
            return out
        stats["sanction"][sanction.code] += 1

        # -- execution ---------------------------------------------------------------------------------
        code = sanction.code
        if code == "BOETE":
            self._collect(out, case, "GB", sanction.amount or 0.0, t_final)
        elif code == "TAAK":
            self._supervise(out, case, "WERKSTRAF", sanction.hours, t_final)
        elif code in ("GEV", "JD"):
            if sanction.conditional:
                if r.random() < 0.5:
                    self._supervise(out, case, "TOEZICHT", None, t_final)
            else:
                self._serve(
                    out,
                    case,
                    "VRIJHEIDSSTRAF",
                    "JJI" if code == "JD" else "GEVANGENIS",
                    self._after(t_final, 14, 120),
                    sanction.days or 1,
                )
        elif code == "ISD":
            self._serve(out, case, "ISD", "GEVANGENIS", self._after(t_final, 1, 14), sanction.days or 730)
        elif code == "TBS":
            self._detain(out, case, "TBS", "FPC", self._after(t_final, 30, 180), None, None, None)
        return out

    def _sanction(self, juvenile: bool) -> Sanction:
        r = self.rng
        code = (_JUVENILE if juvenile else _ADULT).pick(r)
        if code == "GEV":
            u = r.random()
            days = self._int(7, 60) if u < 0.6 else (self._int(60, 365) if u < 0.9 else self._int(365, 1800))
            return Sanction(code, days=days, conditional=r.random() < 0.3)
        if code == "JD":
            return Sanction(code, days=self._int(7, 180), conditional=r.random() < 0.4)
        if code == "TAAK":
            return Sanction(code, hours=self._int(10, 241))
        if code == "BOETE":
            return Sanction(code, amount=self._amount(100, 3000))
        if code == "ISD":
            return Sanction(code, days=730)
        return Sanction(code)

    def _collect(
        self, out: list[Event], case: tuple[dict[str, Any], str], kind: str, amount: float, t_basis: int
    ) -> None:
        r = self.rng
        who, parketnummer = case
        self._cjib += 1
        spread = (self._cjib * 7_919_000_003 + self.seed) % 9_000_000_000_000_000
        number = f"{1_000_000_000_000_000 + spread:016d}"  # 16 digits, unique per collection
        t_start = self._after(t_basis, 14, 60)
        started = self._meta("cjib", "INNING_START", t_start, "CJIB")
        started["suspect"] = who
        started.update(
            {
                "case.cjib_number": number,
                "case.parketnummer": parketnummer,
                "sanction": kind,
                "amount_eur": amount,
            }
        )
        self._add(out, ("cjib", "INNING_START", started))
        self.stats["cjib"][kind] += 1
        u = r.random()
        t = t_start
        open_amount = amount
        if u >= 0.75 and (u < 0.85 or r.random() < 0.3):  # a partial payment first
            part = round(amount * r.uniform(0.2, 0.6), 2)
            t = self._after(t, 5, 60)
            self._pay(out, number, parketnummer, part, False, t)
            open_amount = round(amount - part, 2)
        if u < 0.85:
            self._pay(out, number, parketnummer, open_amount, True, self._after(t, 5, 90))
            return
        days = max(1, min(180, int(open_amount // 50)))
        t_ordered = self._after(t, 180, 400)
        ordered = self._meta("cjib", "VERVANGENDE_HECHTENIS", t_ordered, "CJIB")
        ordered["suspect"] = who
        ordered.update({"case.cjib_number": number, "case.parketnummer": parketnummer, "days": days})
        self._add(out, ("cjib", "VERVANGENDE_HECHTENIS", ordered))
        self.stats["cjib"]["vervangende_hechtenis"] += 1
        if r.random() < 0.6:
            self._serve(out, case, "VERV_HECHTENIS", "GEVANGENIS", self._after(t_ordered, 14, 150), days)

    def _pay(
        self, out: list[Event], number: str, parketnummer: str, amount: float, full: bool, t: int
    ) -> None:
        paid = self._meta("cjib", "BETALING", t, "CJIB")
        paid.update(
            {
                "case.cjib_number": number,
                "case.parketnummer": parketnummer,
                "amount_eur": amount,
                "fully_paid": full,
            }
        )
        self._add(out, ("cjib", "BETALING", paid))

    def _serve(
        self,
        out: list[Event],
        case: tuple[dict[str, Any], str],
        title: str,
        institution: str,
        t_in: int,
        days: int,
    ) -> None:
        r = self.rng
        if r.random() < 0.03:
            t_out, reason = t_in + self._int(1, days + 1) * DAY, "OVERPLAATSING"
        elif days >= 365 and r.random() < 0.8:
            t_out, reason = t_in + (days * 2 // 3) * DAY, "VI"
        else:
            t_out, reason = t_in + days * DAY, "EINDE_STRAF"
        self._detain(out, case, title, institution, t_in, days, t_out, reason)

    def _detain(
        self,
        out: list[Event],
        case: tuple[dict[str, Any], str],
        title: str,
        institution: str,
        t_in: int,
        _days: int | None,
        t_out: int | None,
        reason: str | None,
    ) -> None:
        who, parketnummer = case
        inflow = self._meta("dji", "INSTROOM", t_in, "TULP")
        inflow["suspect"] = who
        inflow.update({"case.parketnummer": parketnummer, "title": title, "institution": institution})
        self._add(out, ("dji", "INSTROOM", inflow))
        self.stats["dji_title"][title] += 1
        if t_out is None or reason is None:
            return
        outflow = self._meta("dji", "UITSTROOM", t_out, "TULP")
        outflow["suspect"] = who
        outflow.update({"case.parketnummer": parketnummer, "reason": reason})
        self._add(out, ("dji", "UITSTROOM", outflow))

    def _supervise(
        self, out: list[Event], case: tuple[dict[str, Any], str], kind: str, hours: int | None, t_basis: int
    ) -> None:
        r = self.rng
        who, parketnummer = case
        t_start = self._after(t_basis, 20, 90)
        started = self._meta("reclassering", "START", t_start, "IRIS")
        started["suspect"] = who
        started.update(
            {"case.parketnummer": parketnummer, "kind": kind, "organisation": _ORGS.pick(r), "hours": hours}
        )
        self._add(out, ("reclassering", "START", started))
        self.stats["reclassering"][kind] += 1
        werkstraf = kind == "WERKSTRAF"
        t_end = self._after(t_start, 30, 180) if werkstraf else self._after(t_start, 365, 730)
        result = "VOLTOOID" if r.random() < (0.85 if werkstraf else 0.7) else "NEGATIEF"
        ended = self._meta("reclassering", "EINDE", t_end, "IRIS")
        ended["suspect"] = who
        ended.update({"case.parketnummer": parketnummer, "kind": kind, "outcome": result})
        self._add(out, ("reclassering", "EINDE", ended))
