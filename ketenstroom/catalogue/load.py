"""Load the chain catalogue once at start-up and check it against the schemas and the terminology.

Layout below the catalogue root (``KETENSTROOM_CATALOGUE_DIR``, default the repository)::

    schemas/<partner>/*.avsc          the partner's record types (Avro), schemas/common shared types
    partners/<partner>/partner.toml   the partner's declaration (see ``catalogue.model``)
    partners/<partner>/mapping.toml   its export columns -> contract fields
    terminology/manifest.toml         code-system tables; terminology/chain-steps.csv the chain steps

Every mistake is a ``ConfigurationError`` naming the file, the line and the key, e.g.
``partners/om/partner.toml:21: records."nl.ketenstroom.om.CaseDecision".case: field 'case.parketnumer'
is not in nl.ketenstroom.om.CaseDecision (fields: ...)``.
"""

from __future__ import annotations

import csv
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ketenstroom.catalogue.model import (
    Catalogue,
    ChainStep,
    ColumnMapping,
    Identity,
    MappingRecord,
    Partner,
    RecordType,
    TopicPolicy,
)
from ketenstroom.catalogue.terminology import load_terminology
from ketenstroom.contract.schemas import EventSchema, SchemaSet, load_schemas
from ketenstroom.errors import ConfigurationError, KetenstroomError

PARTNER_FILE = "partner.toml"
CHAIN_STEPS_FILE = "chain-steps.csv"
CODED = "nl.ketenstroom.common.CodedValue"
IDENTITY = "nl.ketenstroom.common.Identity"
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_DOTS = re.compile(r'\.(?=(?:[^"]*"[^"]*")*[^"]*$)')  # dots outside quotes in a TOML table header


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _IdentityDecl(_Strict):
    skn: str | None = None
    bsn: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    postcode: str | None = None


class _RecordDecl(_Strict):
    step: str | None = None
    case: str | None = None
    report: str | None = None
    execution: str | None = None
    identity: str | _IdentityDecl | None = None  # a path to an Identity record, or the fields one by one
    required_codes: list[str] = Field(default_factory=list)
    optional_codes: list[str] = Field(default_factory=list)
    sanction_days: str | None = None
    sanction_hours: str | None = None
    amount_eur: str | None = None
    crime_municipality: str | None = None


class _TopicsDecl(_Strict):
    partitions: int = Field(3, ge=1)
    retention_days: float = Field(gt=0)
    legal_basis: str


class _PartnerDecl(_Strict):
    name: str
    display_name: str
    code: str
    mapping: str = "mapping.toml"
    delivery_every_days: float | None = Field(None, gt=0)
    position: int = 100
    topics: _TopicsDecl
    record_defaults: _RecordDecl = _RecordDecl()
    records: dict[str, _RecordDecl]


def line_of(text: str, loc: tuple[str | int, ...]) -> int:
    """The line of a dotted key in TOML text (best effort: the key's line, else its table's, else 1)."""
    parts = [str(p) for p in loc]
    header_line = 0
    current: list[str] = []
    best = 1
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("["):
            current = [
                p.strip().strip('"') for p in re.split(r'\.(?=(?:[^"]*"[^"]*")*[^"]*$)', line.strip("[]"))
            ]
            if current == parts[: len(current)]:
                header_line, best = number, number
            continue
        if not parts or current != parts[: len(current)] or (current and not header_line):
            continue
        rest = parts[len(current) :]
        if rest and re.match(rf'^"?{re.escape(rest[0])}"?\s*=', line):
            return number
    return best


def _fail(path: Path, text: str, loc: tuple[str | int, ...], message: str) -> ConfigurationError:
    where = ".".join(f'"{p}"' if "." in str(p) else str(p) for p in loc)
    return ConfigurationError(f"{path}:{line_of(text, loc)}: {where}: {message}")


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc


def _fields(schema: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> Avro type (without null) of every field of an expanded record schema."""
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        path = prefix + field["name"]
        typ = field["type"]
        if isinstance(typ, list):
            typ = next((t for t in typ if t != "null"), "null")
        out[path] = typ
        if isinstance(typ, dict) and typ.get("type") == "record" and _fullname(typ) != CODED:
            out.update(_fields(typ, path + "."))
    return out


#: Filled by the publisher, never by a partner's column.
DERIVED = frozenset({"metadata.event_id", "metadata.partner", "metadata.delivery_time"})


def fillable(schema: Any) -> list[tuple[str, bool]]:
    """(dotted path, optional) of every field a partner's column can fill: primitives, logical types,
    enums and whole coded values (one column holds the code), without what the publisher derives."""
    out: list[tuple[str, bool]] = []

    def walk(node: Any, prefix: str, parent_optional: bool) -> None:
        for field in node["fields"]:
            path = prefix + field["name"]
            typ = field["type"]
            optional = parent_optional or "default" in field or (isinstance(typ, list) and "null" in typ)
            if isinstance(typ, list):
                typ = next((t for t in typ if t != "null"), "null")
            if isinstance(typ, dict) and typ.get("type") == "record" and _fullname(typ) != CODED:
                walk(typ, path + ".", optional)
            elif path not in DERIVED:
                out.append((path, optional))

    walk(schema, "", False)
    return out


def coded_paths(schema: Any) -> frozenset[str]:
    """Dotted paths of the coded values (partner code + system + version) of an expanded record schema."""
    return frozenset(path for path, typ in _fields(schema).items() if _fullname(typ) == CODED)


def _fullname(typ: Any) -> str:
    if isinstance(typ, str):
        return typ
    if isinstance(typ, dict) and "name" in typ:
        name = str(typ["name"])
        return name if "." in name else f"{typ.get('namespace', '')}.{name}"
    return ""


def _nullable(schema: Any, path: str) -> bool:
    node = schema
    for i, name in enumerate(path.split(".")):
        field = next(f for f in node["fields"] if f["name"] == name)
        typ = field["type"]
        if isinstance(typ, list) and "null" in typ:
            return True
        if i < len(path.split(".")) - 1:
            node = typ
    return False


def _record_type(
    fullname: str, decl: _RecordDecl, schema: EventSchema, steps: dict[str, ChainStep], fail: Any
) -> RecordType:
    fields = _fields(schema.schema)
    loc = ("records", fullname)

    def path(key: str, value: str | None, kind: str | None = None) -> str | None:
        if value is None:
            return None
        if value not in fields:
            known = ", ".join(sorted(fields))
            raise fail((*loc, key), f"field {value!r} is not in {fullname} (fields: {known})")
        if kind is not None and _fullname(fields[value]) != kind and fields[value] != kind:
            raise fail((*loc, key), f"field {value!r} is not a {kind.rsplit('.', 1)[-1]}")
        return value

    if decl.step is None:
        raise fail(loc, "needs a chain step (step = ...)")
    if decl.step not in steps:
        raise fail((*loc, "step"), f"unknown chain step {decl.step!r}; declared steps: {', '.join(steps)}")
    if isinstance(decl.identity, str):
        base = path("identity", decl.identity, IDENTITY)
        identity = Identity(*(f"{base}.{n}" for n in ("skn", "bsn", "birth_date", "sex", "postcode")))
    elif decl.identity is not None:
        identity = Identity(
            **{k: path(f"identity.{k}", v) for k, v in decl.identity.model_dump().items() if v is not None}
        )
    else:
        identity = Identity()
    for group in ("required_codes", "optional_codes"):
        for name in getattr(decl, group):
            path(group, name, CODED)
    for name in decl.required_codes:
        if _nullable(schema.schema, name):
            raise fail(
                (*loc, "required_codes"), f"{name!r} is optional in the schema; list it in optional_codes"
            )
    return RecordType(
        fullname=fullname,
        step=decl.step,
        case=path("case", decl.case),
        report=path("report", decl.report),
        execution=path("execution", decl.execution),
        identity=identity,
        required_codes=tuple(decl.required_codes),
        optional_codes=tuple(decl.optional_codes),
        sanction_days=path("sanction_days", decl.sanction_days),
        sanction_hours=path("sanction_hours", decl.sanction_hours),
        amount_eur=path("amount_eur", decl.amount_eur),
        crime_municipality=path("crime_municipality", decl.crime_municipality),
    )


def load_mapping_file(path: Path, partner: str, records: set[str] | None = None) -> ColumnMapping:
    """A partner's column mapping: the type column and each record type's columns, constants and codes."""
    text, data = _read_toml(path)
    type_column = data.get("type_column")
    spec = data.get("records")
    if not isinstance(spec, dict) or not spec:
        raise ConfigurationError(f"{path}:1: records: declare at least one [records.<type value>] table")
    out: dict[str, MappingRecord] = {}
    for value, table in spec.items():
        loc = ("records", value)
        if not isinstance(table, dict) or "record" not in table:
            raise _fail(path, text, loc, "needs record = <full name of the record type>")
        if records is not None and table["record"] not in records:
            raise _fail(
                path, text, (*loc, "record"), f"{table['record']} is not a record type declared for {partner}"
            )
        codes: dict[str, tuple[str, str]] = {}
        for field, code in (table.get("codes") or {}).items():
            if not isinstance(code, dict) or set(code) != {"system", "version"}:
                raise _fail(path, text, (*loc, "codes", field), "must be { system = ..., version = ... }")
            codes[str(field)] = (str(code["system"]), str(code["version"]))
        out[str(value)] = MappingRecord(
            type_value=str(value),
            record=str(table["record"]),
            key=str(table.get("key", "case.parketnummer")),
            columns={str(k): str(v) for k, v in (table.get("columns") or {}).items()},
            constants=dict(table.get("constants") or {}),
            codes=codes,
            spec=table,
        )
    if (type_column is None) != (list(out) == ["*"]):
        raise ConfigurationError(
            f"{path}:1: use type_column with one [records.<value>] per record type, "
            'or no type_column and a single [records."*"]'
        )
    return ColumnMapping(
        path=path, type_column=None if type_column is None else str(type_column), records=out
    )


def load_partner(
    directory: Path, schemas: SchemaSet, steps: dict[str, ChainStep], code_systems: frozenset[str]
) -> Partner:
    path = directory / PARTNER_FILE
    text, data = _read_toml(path)

    def fail(loc: tuple[str | int, ...], message: str) -> ConfigurationError:
        return _fail(path, text, loc, message)

    try:
        decl = _PartnerDecl.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        hint = "unknown key (a typo?)" if first["type"] == "extra_forbidden" else first["msg"]
        raise fail(loc, hint) from None
    if decl.name != directory.name or not _NAME.match(decl.name):
        raise fail(("name",), f"must be the folder's name {directory.name!r} (lower case, a-z 0-9 -)")
    group = {s.fullname: s for s in schemas.for_group(decl.name)}
    for schema in group.values():
        partner_type = _fields(schema.schema).get("metadata.partner")
        symbols = partner_type.get("symbols", []) if isinstance(partner_type, dict) else []
        if decl.code not in symbols:
            raise fail(
                ("code",),
                f"{decl.code!r} is not a symbol of {schema.fullname}'s metadata.partner ({symbols})",
            )
    records: dict[str, RecordType] = {}
    defaults = decl.record_defaults.model_dump(exclude_unset=True)
    for fullname, record in decl.records.items():
        found = group.get(fullname)
        if found is None:
            raise fail(("records", fullname), f"no schema {fullname} under schemas/{decl.name}/")
        merged = _RecordDecl.model_validate({**defaults, **record.model_dump(exclude_unset=True)})
        records[fullname] = _record_type(fullname, merged, found, steps, fail)
    undeclared = sorted(set(group) - set(records))
    if undeclared:
        raise fail(("records",), f"schemas/{decl.name}/ has record types without a declaration: {undeclared}")
    mapping = load_mapping_file(directory / decl.mapping, decl.name, set(records))
    _check_mapping(mapping, records, code_systems)
    return Partner(
        name=decl.name,
        display_name=decl.display_name,
        code=decl.code,
        directory=directory,
        topics=TopicPolicy(
            partitions=decl.topics.partitions,
            retention_days=decl.topics.retention_days,
            legal_basis=decl.topics.legal_basis,
        ),
        records=records,
        mapping=mapping,
        delivery_every_days=decl.delivery_every_days,
        position=decl.position,
    )


def _check_mapping(
    mapping: ColumnMapping, records: dict[str, RecordType], code_systems: frozenset[str]
) -> None:
    text = mapping.path.read_text(encoding="utf-8")
    for value, spec in mapping.records.items():
        record = records[spec.record]
        for name in record.coded:
            if name not in spec.codes:
                if name in spec.columns:
                    raise _fail(
                        mapping.path, text, ("records", value, "codes"), f"{name} needs a code system entry"
                    )
                continue
            system = spec.codes[name][0]
            if system not in code_systems:
                raise _fail(
                    mapping.path,
                    text,
                    ("records", value, "codes", name),
                    f"code system {system!r} has no terminology table (terminology/manifest.toml lists "
                    "the tables); add one so its codes can be mapped",
                )


def load_chain_steps(path: Path) -> dict[str, ChainStep]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the chain steps: {exc.strerror}") from exc
    steps: dict[str, ChainStep] = {}
    for line, row in enumerate(rows, start=2):
        name = (row.get("chain_step") or "").strip()
        if not name or name in steps:
            raise ConfigurationError(f"{path}:{line}: chain_step: empty or repeated {name!r}")
        steps[name] = ChainStep(
            name, (row.get("stage") or "").strip() or None, (row.get("label") or "").strip()
        )
    return steps


def load_catalogue(root: Path) -> Catalogue:
    """Read and check everything below ``root``; the first mistake stops with file, line and key."""
    root = root.resolve()
    schemas = load_schemas(root / "schemas")
    try:
        terminology = load_terminology(root / "terminology")
    except KetenstroomError as exc:
        raise ConfigurationError(str(exc)) from exc
    steps = load_chain_steps(root / "terminology" / CHAIN_STEPS_FILE)
    partner_root = root / "partners"
    dirs = sorted(p.parent for p in partner_root.glob(f"*/{PARTNER_FILE}"))
    if not dirs:
        raise ConfigurationError(f"{partner_root}: no partners/<partner>/{PARTNER_FILE} found")
    loaded = [load_partner(d, schemas, steps, terminology.code_systems) for d in dirs]
    partners = {p.name: p for p in sorted(loaded, key=lambda p: (p.position, p.name))}
    groups = {s.group for s in schemas} - {"curated"}
    stray = sorted(groups - set(partners))
    if stray:
        raise ConfigurationError(f"{root / 'schemas'}: schema folders without a partner declaration: {stray}")
    return Catalogue(root=root, schemas=schemas, terminology=terminology, steps=steps, partners=partners)


@cache
def catalogue_at(root: Path) -> Catalogue:
    """``load_catalogue``, once per process and root."""
    return load_catalogue(root)
