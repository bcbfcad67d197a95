"""Row validation with pydantic: one model per partner record, dates as partners write them.

A model receives the row already renamed to contract field names (see ``partners/*.toml``) and
returns the Avro record. Every failure becomes an ``InputRowError`` naming row, field, value, reason.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from ketenstroom.contract.identifiers import normalise_bsn, normalise_parketnummer, normalise_pv_number
from ketenstroom.errors import IdentifierError, InputRowError

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_DATE_FORMATS = ("%d-%m-%Y", "%Y-%m-%d", "%d/%m/%Y")
_DATETIME_FORMATS = ("%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")
_SEX = {"M": "M", "MAN": "M", "V": "V", "VROUW": "V", "F": "V", "O": "O", "ONBEKEND": "O", "X": "O"}


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def parse_date(value: Any) -> date:
    """Dutch ``dd-mm-jjjj`` or ISO ``jjjj-mm-dd``."""
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date: use dd-mm-jjjj or jjjj-mm-dd, got {text!r}")


def parse_moment(value: Any) -> datetime:
    """A moment in time; naive values are Europe/Amsterdam local time, a bare date is local midnight."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        moment = None
        try:
            moment = datetime.fromisoformat(text) if "T" in text or "+" in text else None
        except ValueError:
            moment = None
        for fmt in _DATETIME_FORMATS:
            if moment is not None:
                break
            try:
                moment = datetime.strptime(text, fmt)
            except ValueError:
                continue
        if moment is None:
            moment = datetime.combine(parse_date(text), datetime.min.time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=AMSTERDAM)
    return moment.astimezone(UTC)


def _optional_date(value: Any) -> date | None:
    value = _blank_to_none(value)
    return None if value is None else parse_date(value)


OptStr = Annotated[str | None, BeforeValidator(_blank_to_none)]
OptDate = Annotated[date | None, BeforeValidator(_optional_date)]
LocalDate = Annotated[date, BeforeValidator(parse_date)]
Moment = Annotated[datetime, BeforeValidator(parse_moment)]


class CodeSystem(BaseModel):
    system: str
    version: str


class PartnerRow(BaseModel):
    """Fields every partner record has: delivery metadata and the suspect's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    record_name: ClassVar[str]

    source_record_id: str = Field(min_length=1)
    record_version: int = Field(default=1, ge=1)
    source_system: str = Field(min_length=1)
    event_time: Moment
    registration_time: Moment
    skn: OptStr = None
    bsn: OptStr = None
    birth_date: OptDate = None
    sex: OptStr = None
    postcode: OptStr = None

    @field_validator("bsn")
    @classmethod
    def _bsn_format(cls, value: str | None) -> str | None:
        # The 11-check is the processor's to flag (the fact is kept, not hashed as valid); format is ours.
        if value is None:
            return None
        try:
            return normalise_bsn(value)
        except IdentifierError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("sex")
    @classmethod
    def _sex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = _SEX.get(value.upper())
        if found is None:
            raise ValueError(f"sex must be one of M, V, O (or man, vrouw, onbekend), got {value!r}")
        return found

    def identity(self) -> dict[str, Any]:
        return {"skn": self.skn, "bsn": self.bsn, "birth_date": self.birth_date, "sex": self.sex,
                "postcode": self.postcode}

    def body(self, codes: dict[str, CodeSystem]) -> dict[str, Any]:
        """The record's own fields (everything but metadata), ready for Avro."""
        raise NotImplementedError

    def metadata(self, *, partner: str, event_id: str, delivered: datetime) -> dict[str, Any]:
        return {
            "event_id": event_id, "partner": partner.upper(), "source_system": self.source_system,
            "source_record_id": self.source_record_id, "record_version": self.record_version,
            "event_time": self.event_time, "registration_time": self.registration_time,
            "delivery_time": delivered,
        }


class CaseDecisionRow(PartnerRow):
    """OM beslissing."""

    record_name = "nl.ketenstroom.om.CaseDecision"

    parketnummer: str
    pv_number: OptStr = None
    decision: str = Field(min_length=1)
    sepot_ground: OptStr = None
    offence: OptStr = None

    @field_validator("parketnummer")
    @classmethod
    def _parketnummer(cls, value: str) -> str:
        try:
            normalise_parketnummer(value)
        except IdentifierError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("pv_number")
    @classmethod
    def _pv(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                normalise_pv_number(value)
            except IdentifierError as exc:
                raise ValueError(str(exc)) from None
        return value

    def body(self, codes: dict[str, CodeSystem]) -> dict[str, Any]:
        def coded(kind: str, code: str | None) -> dict[str, str] | None:
            if code is None:
                return None
            cs = codes[kind]
            return {"code_system": cs.system, "code": code, "code_system_version": cs.version}

        return {
            "suspect": self.identity(),
            "case": {"parketnummer": self.parketnummer, "pv_number": self.pv_number},
            "decision": coded("decision", self.decision),
            "sepot_ground": coded("sepot_ground", self.sepot_ground),
            "offence": coded("offence", self.offence),
        }


MODELS: dict[str, type[PartnerRow]] = {"CaseDecisionRow": CaseDecisionRow}

_REASONS = {
    "missing": "missing-field",
    "string_too_short": "missing-field",
    "extra_forbidden": "unknown-field",
    "int_parsing": "not-a-number",
    "greater_than_equal": "out-of-range",
}


def validate_row(model: type[PartnerRow], row: dict[str, Any], *, line: int,
                 columns: dict[str, str]) -> PartnerRow:
    """Validate one renamed row; the error names the partner's own column, the value and the reason."""
    try:
        return model.model_validate(row)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        kind = str(first["type"])
        reason = _REASONS.get(kind, f"invalid-{field.replace('_', '-')}")
        message = str(first["msg"]).removeprefix("Value error, ")
        column = columns.get(field, field)
        raise InputRowError(row=line, field=column, value=row.get(field), reason=reason,
                            message=message) from None
