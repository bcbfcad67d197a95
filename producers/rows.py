"""Row validation driven by the Avro contract and the partner's column mapping.

For every record type a pydantic model is built from the record's schema: one field per leaf the
mapping fills, typed from Avro (string, int, double, boolean, date, timestamp, enum, coded value),
with the chain's identifier rules on the fields that carry identifiers. Partners' values are read as
they write them: Dutch dates (dd-mm-jjjj), local times (Europe/Amsterdam), decimal commas, ja/nee.
Every failure becomes an ``InputRowError`` naming line, the partner's own column, value and reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from ketenstroom.calendar import AMSTERDAM
from ketenstroom.contract.identifiers import normalise_bsn, normalise_parketnummer, normalise_pv_number
from ketenstroom.errors import ConfigurationError, IdentifierError, InputRowError

CODED = "nl.ketenstroom.common.CodedValue"
_SEX = {"M": "M", "MAN": "M", "V": "V", "VROUW": "V", "F": "V", "O": "O", "ONBEKEND": "O", "X": "O"}
_BOOL = {
    "ja": True,
    "j": True,
    "true": True,
    "1": True,
    "y": True,
    "yes": True,
    "nee": False,
    "n": False,
    "false": False,
    "0": False,
    "no": False,
}
#: Filled by the publisher, never by a column.
DERIVED = frozenset({"metadata.event_id", "metadata.partner", "metadata.delivery_time"})
#: Lower bounds of numeric fields (the fast path in ``producers.fastpath`` reads the same table).
MINIMUM = {"metadata.record_version": 1}


@dataclass(frozen=True)
class CodeSystem:
    system: str
    version: str


# dd-mm-jjjj or dd/mm/jjjj, optionally followed by HH:MM[:SS]: the partners' usual spelling, parsed
# with a regex and int() because strptime costs ~30 us a call and a delivery has millions of dates.
DUTCH_MOMENT = re.compile(r"(\d{2})[-/](\d{2})[-/](\d{4})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?")


def _dutch(text: str) -> datetime | None:
    match = DUTCH_MOMENT.fullmatch(text)
    if match is None:
        return None
    day, month, year, hour, minute, second = match.groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as exc:
        raise ValueError(f"not a real date: {text!r} ({exc}); use dd-mm-jjjj or jjjj-mm-dd") from None


def parse_date(value: Any) -> date:
    """Dutch ``dd-mm-jjjj`` or ISO ``jjjj-mm-dd``."""
    if isinstance(value, date):
        return value
    text = str(value).strip()
    found = _dutch(text) if len(text) == 10 else None
    if found is not None:
        return found.date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date: use dd-mm-jjjj or jjjj-mm-dd, got {text!r}") from None


def parse_moment(value: Any) -> datetime:
    """A moment; naive values are Europe/Amsterdam local time, a bare date is local midnight."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        found = _dutch(text)
        if found is None:
            try:
                found = datetime.fromisoformat(text)  # ISO date, date-time, with or without offset
            except ValueError:
                raise ValueError(f"not a date: use dd-mm-jjjj [HH:MM] or ISO 8601, got {text!r}") from None
        moment = found
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=AMSTERDAM)
    return moment.astimezone(UTC)


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def normalise_decimal(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().replace("\u20ac", "").strip()
        return text.replace(".", "").replace(",", ".") if "," in text else text
    return value


def parse_bool(value: Any) -> Any:
    if isinstance(value, str):
        found = _BOOL.get(value.strip().lower())
        if found is None:
            raise ValueError(f"must be ja/nee (or true/false, 1/0), got {value!r}")
        return found
    return value


def _identifier(check: Callable[[str], str], keep_original: bool) -> Callable[[str | None], str | None]:
    def validate(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            normal = check(value)
        except IdentifierError as exc:
            raise ValueError(str(exc)) from None
        return value if keep_original else normal

    return validate


def _sex(value: str | None) -> str | None:
    if value is None:
        return None
    found = _SEX.get(value.strip().upper())
    if found is None:
        raise ValueError(f"must be one of M, V, O (or man, vrouw, onbekend), got {value!r}")
    return found


# Validators by the field's name in the contract; raw events keep identifiers as delivered but only
# well-formed ones get through (the BSN 11-check is the processor's to flag, not a reason to reject).
SEMANTIC: dict[str, Callable[[Any], Any]] = {
    "bsn": _identifier(normalise_bsn, keep_original=False),
    "parketnummer": _identifier(normalise_parketnummer, keep_original=True),
    "pv_number": _identifier(normalise_pv_number, keep_original=True),
    "sex": _sex,
}


@dataclass(frozen=True)
class Leaf:
    path: str  # dotted: "case.parketnummer"; a coded value is one leaf ("decision")
    avro: Any
    optional: bool
    default: Any = None  # used when an optional, non-null field (e.g. boolean with default) is blank

    @property
    def name(self) -> str:
        return self.path.replace(".", "__")

    @property
    def last(self) -> str:
        return self.path.rsplit(".", 1)[-1]


def leaves(schema: dict[str, Any], prefix: str = "") -> list[Leaf]:
    """Every fillable leaf of a record: primitives, logical types, enums and coded values."""
    out: list[Leaf] = []
    for field in schema["fields"]:
        path = f"{prefix}{field['name']}"
        typ = field["type"]
        optional = isinstance(typ, list) and "null" in typ
        if isinstance(typ, list):
            typ = next(t for t in typ if t != "null")
        if isinstance(typ, dict) and typ.get("type") == "record" and _fullname(typ) != CODED:
            out.extend(leaves(typ, prefix=f"{path}."))
        elif (isinstance(typ, dict) and typ.get("type") == "record") or typ == CODED:
            out.append(Leaf(path, CODED, optional))
        else:
            out.append(Leaf(path, typ, optional or "default" in field, field.get("default")))
    return out


def _fullname(typ: dict[str, Any]) -> str:
    return f"{typ.get('namespace')}.{typ['name']}" if "." not in typ["name"] else str(typ["name"])


def _annotation(leaf: Leaf) -> Any:
    avro = leaf.avro
    logical = avro.get("logicalType") if isinstance(avro, dict) else None
    base = avro.get("type") if isinstance(avro, dict) else avro
    validators: list[Any] = []
    after: list[Any] = []
    if logical == "date":
        py: Any = date
        validators.append(BeforeValidator(lambda v: None if v is None else parse_date(v)))
    elif logical in ("timestamp-millis", "timestamp-micros"):
        py = datetime
        validators.append(BeforeValidator(lambda v: None if v is None else parse_moment(v)))
    elif base in ("int", "long"):
        py = int
    elif base in ("double", "float"):
        py = float
        validators.append(BeforeValidator(normalise_decimal))
    elif base == "boolean":
        py = bool
        validators.append(BeforeValidator(lambda v: None if v is None else parse_bool(v)))
    elif base == "enum":
        py = str
        symbols = list(avro["symbols"])
        after.append(AfterValidator(lambda v: _in(v, symbols)))
    else:
        py = str
    if leaf.last in SEMANTIC:
        after.append(AfterValidator(SEMANTIC[leaf.last]))
    typ = py | None if leaf.optional else py
    # pydantic runs "before" validators last-to-first: blank -> None must come last to run first
    return Annotated[typ, *validators, BeforeValidator(_blank_to_none), *after]


def _in(value: str | None, symbols: list[str]) -> str | None:
    if value is not None and value.upper() not in symbols:
        raise ValueError(f"must be one of {', '.join(symbols)}, got {value!r}")
    return None if value is None else value.upper()


_REASONS = {
    "missing": "missing-field",
    "string_too_short": "missing-field",
    "int_parsing": "not-a-number",
    "int_from_float": "not-a-number",
    "float_parsing": "not-a-number",
    "greater_than_equal": "out-of-range",
}


def build_model(record: str, fields: list[Leaf], required: frozenset[str] = frozenset()) -> type[BaseModel]:
    """A pydantic model for the leaves a mapping fills; required ones (and ``required``) may not be blank."""
    definitions: dict[str, Any] = {}
    for given in fields:
        leaf = Leaf(given.path, given.avro, optional=False) if given.path in required else given
        extra: dict[str, Any] = {"alias": leaf.path}
        if leaf.path in MINIMUM:
            extra["ge"] = MINIMUM[leaf.path]
        if leaf.avro == "string" and not leaf.optional:
            extra["min_length"] = 1
        default = leaf.default if leaf.optional else ...
        definitions[leaf.name] = (_annotation(leaf), Field(default, **extra))
    model: type[BaseModel] = create_model(
        record.rsplit(".", 1)[-1] + "Row",
        __config__=ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True),
        **definitions,
    )
    return model


def validate(
    model: type[BaseModel], values: dict[str, Any], *, line: int, columns: dict[str, str]
) -> dict[str, Any]:
    """Validate one row (keyed by contract path); errors name the partner's own column."""
    try:
        return model.model_validate(values).model_dump(by_alias=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        path = str(first["loc"][0]) if first["loc"] else "?"
        kind = str(first["type"])
        raw = values.get(path)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            reason, message = "missing-field", "a value is required"
        else:
            reason = _REASONS.get(kind, f"invalid-{path.rsplit('.', 1)[-1].replace('_', '-')}")
            message = str(first["msg"]).removeprefix("Value error, ")
        raise InputRowError(
            row=line, field=columns.get(path, path), value=values.get(path), reason=reason, message=message
        ) from None


def nest(flat: dict[str, Any], coded: dict[str, CodeSystem]) -> dict[str, Any]:
    """Dotted paths -> the nested Avro record; coded leaves become CodedValue records."""
    out: dict[str, Any] = {}
    for path, flat_value in flat.items():
        value = flat_value
        if path in coded:
            cs = coded[path]
            value = (
                None
                if value is None
                else {"code_system": cs.system, "code": value, "code_system_version": cs.version}
            )
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def check_mapping(
    record: str, all_leaves: list[Leaf], mapped: set[str], coded: dict[str, CodeSystem]
) -> None:
    """Refuse a mapping that leaves a required field without a column or names an unknown one."""
    known = {leaf.path for leaf in all_leaves}
    unknown = sorted(mapped - known)
    if unknown:
        raise ConfigurationError(
            f"{record}: mapped fields {unknown} are not in the schema; "
            f"fields are: {', '.join(sorted(known - DERIVED))}"
        )
    missing = sorted(
        leaf.path
        for leaf in all_leaves
        if not leaf.optional and leaf.path not in mapped and leaf.path not in DERIVED
    )
    if missing:
        raise ConfigurationError(f"{record}: required fields {missing} have no column or constant")
    coded_leaves = {leaf.path for leaf in all_leaves if leaf.avro == CODED}
    lacking = sorted((coded_leaves & mapped) - set(coded))
    if lacking:
        raise ConfigurationError(f"{record}: coded fields {lacking} need a [codes] entry (system, version)")
