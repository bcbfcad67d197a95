"""A schemaless Avro reader generated for one writer schema, reading only the fields asked for.

``compile_reader(schema, paths)`` writes Python source for the schema's field list (each field read or
skipped in place, no schema walk per record, no dict per nested record) and returns a function
``read(buffer) -> tuple | None``: the values at ``paths`` in that order, read from ``buffer[start:]``.
Values are plain, as fastavro reads the schema without its logical types: ``timestamp-millis`` an int
of milliseconds, ``date`` an int of days since 1970-01-01, ``uuid`` its string, an enum its symbol; a
path under a null record, or one the schema does not have, is None.

It only reads what fastavro reads *the same way with the logical types*: it answers None (and a caller
takes the fastavro/reference path, whose errors name the fault) for a record with bytes left over or
missing, a union index or enum index or boolean byte other than the canonical ones, a negative length,
a varint of more than ten bytes or 64 bits (fastavro cuts those), a timestamp or date outside
``PLAIN_MS``/``PLAIN_DAYS``, a UUID not in canonical lower-case form. A
string is decoded as UTF-8 wherever it is, read or skipped (fastavro refuses invalid UTF-8 anywhere);
other faults (cut short, invalid UTF-8) raise, and callers treat an exception as None. Schemas with an
array, a map, a union of more than null and one type, a recursive record, another logical type or
records nested too deep for Python's compiler are not compiled (``NotCompilable``): their records
take the caller's general path.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

Path = tuple[str, ...]
Read = Callable[[bytes], "tuple[Any, ...] | None"]

# Well inside what fastavro's logical readers turn into a datetime or date (years 1-9999).
PLAIN_MS = (-2_208_988_800_000, 7_258_118_400_000)  # 1900-01-01 .. 2200-01-01 UTC, in milliseconds
PLAIN_DAYS = (-25_567, 84_006)  # the same, in days since 1970-01-01
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_LOGICAL = {("long", "timestamp-millis"), ("int", "date"), ("string", "uuid")}


class NotCompilable(ValueError):
    """The schema has a shape the generated reader does not cover."""


class _Source:
    """The generated function's lines, indented as they are added."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1

    def add(self, *lines: str) -> None:
        self.lines.extend("    " * self.depth + line for line in lines)


class _Compiler:
    def __init__(self, paths: Sequence[Path | None], encoded: Sequence[Path] = ()) -> None:
        self.paths = [None if path is None else tuple(path) for path in paths]
        unique = dict.fromkeys(path for path in self.paths if path is not None)
        self.wanted = {path: f"v{i}" for i, path in enumerate(unique)}
        self.encoded = {tuple(path): f"e{i}" for i, path in enumerate(dict.fromkeys(map(tuple, encoded)))}
        self.canonical = False  # a varint read now must be in canonical form (its bytes are handed on)
        self.named: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}
        self.assigned: set[str] = set()
        self.optional: set[str] = set()  # assigned only in a branch: set to None first
        self.source = _Source()
        self.open: set[str] = set()  # records being compiled (a recursive one is not compiled)

    def constant(self, value: Any) -> str:
        name = f"k{len(self.constants)}"
        self.constants[name] = value
        return name

    def resolve(self, typ: Any) -> Any:
        if isinstance(typ, str) and typ not in _PRIMITIVES:
            if typ not in self.named:
                raise NotCompilable(f"unknown named type {typ}")
            return self.named[typ]
        if isinstance(typ, dict) and typ.get("type") in ("record", "enum", "fixed") and "name" in typ:
            self.named.setdefault(typ["name"], typ)
        return typ

    def varint(self, var: str) -> None:
        """``var`` = the unsigned varint at ``p``; ``p`` after it."""
        # one byte: the common case; more: the groups in a loop here (a call per varint costs more)
        self.source.add(
            f"{var} = buf[p]",
            "p += 1",
            f"if {var} > 127:",
            f"    {var} &= 127",
            "    s = 7",
            "    b = buf[p]",
            "    p += 1",
            "    while b > 127:",
            f"        {var} |= (b & 127) << s",
            "        s += 7",
            "        b = buf[p]",
            "        p += 1",
            f"    {var} |= b << s",
            f"    if s > 63 or {var} >> 64:",  # more than ten bytes or 64 bits: fastavro cuts it
            "        return None",
        )
        if self.canonical:  # fastavro writes no trailing zero group
            self.source.add("    if not b:", "        return None")

    def field(self, typ: Any, path: Path) -> None:
        """Read (or skip) one value of type ``typ`` at ``path``."""
        typ = self.resolve(typ)
        target = self.wanted.get(path)
        if isinstance(typ, list):
            self.union(typ, path)
            return
        base = typ.get("type") if isinstance(typ, dict) else typ
        logical = typ.get("logicalType") if isinstance(typ, dict) else None
        if isinstance(base, (dict, list)) or (isinstance(base, str) and base in self.named):
            self.field(base, path)  # {"type": {...}} or {"type": "Name"}
            return
        if logical is not None and (base, logical) not in _LOGICAL:
            raise NotCompilable(f"{'.'.join(path)}: logical type {logical} on {base}")
        if base == "record":
            self.record(typ, path)
            return
        emit = self.EMIT.get(str(base))
        if emit is None:
            raise NotCompilable(f"{'.'.join(path)}: type {base}")
        if target is not None:
            self.assigned.add(target)
        encoded = self.encoded.get(path)
        if encoded is None:
            emit(self, typ, str(base), logical, target)
            return
        if base not in ("int", "long", "string", "bytes", "enum"):
            raise NotCompilable(f"{'.'.join(path)}: the encoding of a {base} is not handed on")
        self.source.add(f"s{encoded} = p")
        self.canonical = True
        emit(self, typ, str(base), logical, target)
        self.canonical = False
        self.source.add(f"{encoded} = buf[s{encoded}:p]")
        self.assigned.add(encoded)

    # one method per kind of value: the lines reading it into ``target`` (None: skipping it)
    def _null(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        if target is not None:
            self.source.add(f"{target} = None")

    def _boolean(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        self.source.add("if buf[p] > 1:", "    return None")  # only the canonical bytes 0 and 1
        if target is not None:
            self.source.add(f"{target} = buf[p] == 1")
        self.source.add("p += 1")

    def _integer(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        out = target or "_"
        self.varint("n")
        if target is not None or logical is not None:
            self.source.add(f"{out} = (n >> 1) ^ -(n & 1)")
        if logical is not None:
            low, high = PLAIN_MS if logical == "timestamp-millis" else PLAIN_DAYS
            self.source.add(f"if not {low} <= {out} < {high}:", "    return None")

    def _floating(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        size, code = (4, "<f") if base == "float" else (8, "<d")
        if target is not None:
            self.source.add(f"{target} = {self.constant(struct.Struct(code).unpack_from)}(buf, p)[0]")
        self.source.add(f"p += {size}")

    def _text(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        out, src = target or "_", self.source
        self.varint("n")
        src.add("if n & 1:", "    return None", "q = p + (n >> 1)")
        if base == "string":
            src.add(f"{out} = buf[p:q].decode()")  # skipped or not: fastavro refuses bad UTF-8
            if logical == "uuid":
                match = self.constant(CANONICAL_UUID.fullmatch)
                src.add(f"if {match}({out}) is None:", "    return None")
        elif target is not None:
            src.add(f"{target} = buf[p:q]")
        src.add("p = q")

    def _enum(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        symbols = tuple(typ["symbols"])
        self.varint("n")
        self.source.add(f"if n & 1 or n >= {2 * len(symbols)}:", "    return None")
        if target is not None:
            self.source.add(f"{target} = {self.constant(symbols)}[n >> 1]")

    def _fixed(self, typ: Any, base: str, logical: str | None, target: str | None) -> None:
        size = int(typ["size"])
        if target is not None:
            self.source.add(f"{target} = buf[p:p + {size}]")
        self.source.add(f"p += {size}")

    EMIT: ClassVar[dict[str, Callable[[_Compiler, Any, str, str | None, str | None], None]]] = {
        "null": _null,
        "boolean": _boolean,
        "int": _integer,
        "long": _integer,
        "float": _floating,
        "double": _floating,
        "string": _text,
        "bytes": _text,
        "enum": _enum,
        "fixed": _fixed,
    }

    def record(self, typ: dict[str, Any], path: Path) -> None:
        name = str(typ.get("name"))
        if name in self.open:
            raise NotCompilable(f"recursive record {name}")
        self.open.add(name)
        for field in typ["fields"]:
            self.field(field["type"], (*path, field["name"]))
        self.open.discard(name)

    def union(self, typ: list[Any], path: Path) -> None:
        if len(typ) != 2 or "null" not in typ or typ[0] == typ[1]:
            raise NotCompilable(f"{'.'.join(path)}: union {typ}")
        if path in self.encoded:
            raise NotCompilable(f"{'.'.join(path)}: the encoding of a union is not handed on")
        other = typ[1] if typ[0] == "null" else typ[0]
        value_index, null_index = (2, 0) if typ[0] == "null" else (0, 2)  # zig-zag of 1 and 0
        src = self.source
        src.add("b = buf[p]", "p += 1", f"if b == {value_index}:")
        src.depth += 1
        before = set(self.assigned)
        mark = len(src.lines)
        self.field(other, path)
        if len(src.lines) == mark:
            src.add("pass")
        src.depth -= 1
        inside = sorted(self.assigned - before)
        self.optional.update(inside)
        src.add(f"elif b != {null_index}:", "    return None")

    def compile(self, schema: Any, start: int) -> Read:
        schema = self.resolve(schema)
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise NotCompilable("not a record schema")
        try:
            self.record(schema, ())
        except RecursionError:
            raise NotCompilable("records nested too deep") from None
        body = self.source.lines
        outputs = [
            "None" if path is None or self.wanted[path] not in self.assigned else self.wanted[path]
            for path in self.paths
        ] + [var if var in self.assigned else "None" for var in self.encoded.values()]
        head = [f"    {var} = None" for var in sorted(self.optional)]
        text = "\n".join(
            [
                "def read(buf):",
                f"    p = {start}",
                *head,
                *body,
                "    if p != len(buf):",
                "        return None",
                f"    return ({', '.join(outputs)}{',' if len(outputs) == 1 else ''})",
            ]
        )
        namespace: dict[str, Any] = dict(self.constants)
        try:
            code = compile(text, "<avro reader>", "exec")
        except (SyntaxError, RecursionError, MemoryError) as exc:  # e.g. too many nested blocks
            raise NotCompilable(f"the generated reader does not compile: {exc}") from None
        exec(code, namespace)  # noqa: S102
        read: Read = namespace["read"]
        read.source = text  # type: ignore[attr-defined]  # for tests and debugging
        return read


def compile_reader(
    schema: Any, paths: Sequence[Path | None], *, encoded: Sequence[Path] = (), start: int = 0
) -> Read:
    """A reader of ``schema``'s records returning the values at ``paths`` (see the module's doc); a
    path may repeat, and None stands for a value that is always None.

    After those values come the Avro bytes of the values at ``encoded`` (non-union ints, longs,
    strings, bytes, enums; None where the path is absent or under a null record) exactly as they are in
    the record, and only if they are what fastavro writes for the value (varints without a trailing
    zero group; else None for the record): for a writer that hands them on unchanged."""
    return _Compiler(paths, encoded).compile(schema, start)
