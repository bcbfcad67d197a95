"""The research catalogue (``publication/research.toml``) and a study's request (a TOML file).

The catalogue says which columns exist, their role in disclosure control (key, quasi, sensitive,
plain), where each comes from and which generalisation levels are allowed. A request names a study,
the periods, a population and, per column, one allowed level. Anything not in the catalogue cannot be
asked for, and no level exists that yields an exact date, an exact age, a municipality or a platform
pseudonym: safety comes from what can be expressed, before any check runs.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ketenstroom.calendar import period_bounds
from ketenstroom.errors import ConfigurationError, ExtractError

Kind = Literal["key", "quasi", "sensitive", "plain"]
STEPS = ("police_registration", "om_registration", "om_decision", "judgment", "execution_start")
#: Every level the code implements, by the kind of source value it applies to.
LEVELS: dict[str, tuple[str, ...]] = {
    "pseudonym": ("study_pseudonym",),
    "age": ("band5", "band10", "cbs"),
    "municipality": ("corop", "province"),
    "scm2010": ("rare_to_parent", "scm2", "scm1"),
    "count": ("band",),
    "time": ("week", "month", "quarter", "year"),
    "days": ("days", "weeks"),
    "category": ("as_is",),
}
_SOURCE = re.compile(r"^(chain|person|event)\.[a-z0-9_]+$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_STUDY = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnSpec(_Frozen):
    kind: Kind
    source: str
    label: str
    levels: list[str] = Field(min_length=1)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not _SOURCE.match(value):
            raise ValueError(f"source {value!r} must be chain.<column>, person.<column> or event.<name>")
        return value

    @model_validator(mode="after")
    def _levels(self) -> ColumnSpec:
        known = {level for levels in LEVELS.values() for level in levels}
        unknown = [level for level in self.levels if level not in known]
        if unknown:
            raise ValueError(f"levels {unknown} are not implemented; known: {sorted(known)}")
        if (self.kind == "key") != (self.levels == ["study_pseudonym"]):
            raise ValueError("a key column has exactly the level study_pseudonym, and only a key has it")
        return self


class Policy(_Frozen):
    """Platform floors: a study may ask for more protection, never less."""

    default_k: int = 5
    min_k: int = 5
    default_l: int = 2
    min_l: int = 2
    default_suppression_budget: float = 0.02
    max_suppression_budget: float = 0.05


class Catalogue(_Frozen):
    version: str
    policy: Policy = Policy()
    columns: dict[str, ColumnSpec]
    sha256: str = ""

    @field_validator("columns")
    @classmethod
    def _names(cls, value: dict[str, ColumnSpec]) -> dict[str, ColumnSpec]:
        bad = [name for name in value if not _NAME.match(name)]
        if bad:
            raise ValueError(f"column names {bad} must be lower-case identifiers (a-z, 0-9, _)")
        return value

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        raw = _read_toml(path, "research catalogue")
        try:
            return cls.model_validate({**raw, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        except ValidationError as exc:
            raise ExtractError(f"research catalogue {path} is not valid: {exc}") from exc


class Population(_Frozen):
    """Cases whose ``reached`` step falls on a local date in [from, to); optionally only juveniles."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    reached: Literal["police_registration", "om_registration", "om_decision", "judgment", "execution_start"]
    from_: date | None = Field(None, alias="from")
    to: date | None = None
    juvenile: bool | None = None


class StudyRequest(_Frozen):
    study: str
    requester: str = Field(min_length=1)
    purpose: str = ""
    periods: list[str] = Field(min_length=1)
    revisions: dict[str, int] = Field(default_factory=dict)
    k: int | None = None
    l: int | None = None  # noqa: E741 - the name the literature uses
    suppression_budget: float | None = Field(None, ge=0, le=1)
    population: Population | None = None
    columns: dict[str, str] = Field(min_length=1)
    sha256: str = ""

    @field_validator("study")
    @classmethod
    def _study(cls, value: str) -> str:
        if not _STUDY.match(value):
            raise ValueError(
                f"study id {value!r}: 3-64 characters, lower-case letters, digits, '.', '_' or '-'"
            )
        return value

    @field_validator("periods")
    @classmethod
    def _periods(cls, value: list[str]) -> list[str]:
        for code in value:
            try:
                period_bounds(code)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from exc
        return sorted(set(value))

    @classmethod
    def load(cls, path: Path) -> StudyRequest:
        raw = _read_toml(path, "study request")
        try:
            return cls.model_validate({**raw, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        except (ValidationError, ValueError) as exc:
            raise ExtractError(f"study request {path} is not valid: {exc}") from exc


class Resolved(_Frozen):
    """A request checked against the catalogue: thresholds settled, columns in catalogue order."""

    request: StudyRequest
    catalogue: Catalogue
    k: int
    l: int  # noqa: E741
    suppression_budget: float
    columns: dict[str, str]  # name -> level, in catalogue order

    def of_kind(self, kind: Kind) -> list[str]:
        return [name for name in self.columns if self.catalogue.columns[name].kind == kind]


def resolve(request: StudyRequest, catalogue: Catalogue) -> Resolved:
    """Check a request against the catalogue and its policy; every problem named at once."""
    problems: list[str] = []
    for name, level in request.columns.items():
        spec = catalogue.columns.get(name)
        if spec is None:
            problems.append(
                f"column {name!r} is not in the research catalogue (known: {sorted(catalogue.columns)})"
            )
        elif level not in spec.levels:
            problems.append(f"column {name!r}: level {level!r} is not allowed; allowed: {spec.levels}")
    policy = catalogue.policy
    k = policy.default_k if request.k is None else request.k
    l_ = policy.default_l if request.l is None else request.l
    budget = (
        policy.default_suppression_budget
        if request.suppression_budget is None
        else request.suppression_budget
    )
    if k < policy.min_k:
        problems.append(f"k = {k} is below the platform's minimum {policy.min_k}")
    if l_ < policy.min_l:
        problems.append(f"l = {l_} is below the platform's minimum {policy.min_l}")
    if budget > policy.max_suppression_budget:
        problems.append(
            f"suppression_budget = {budget} is above the platform's maximum {policy.max_suppression_budget}"
        )
    unknown_revisions = sorted(set(request.revisions) - set(request.periods))
    if unknown_revisions:
        problems.append(f"revisions pinned for periods not asked for: {unknown_revisions}")
    if problems:
        raise ExtractError("the study request cannot be served:\n  " + "\n  ".join(problems))
    ordered = {name: request.columns[name] for name in catalogue.columns if name in request.columns}
    return Resolved(
        request=request, catalogue=catalogue, k=k, l=l_, suppression_budget=budget, columns=ordered
    )


def _read_toml(path: Path, what: str) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ExtractError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ExtractError(f"{what} {path} is not valid TOML: {exc}") from exc
