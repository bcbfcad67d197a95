"""Steps of publish's fast path: a partner's string -> Avro bytes (or a value), with the model's parsers.

Every step raises ValueError (``NotPlain`` or the parser's own) when the value is not plainly valid;
``producers.fastpath`` then hands the row to the reference path. A step may be stricter than the model,
never more lenient, and must write exactly the bytes fastavro writes for the reference record.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from fastavro.write import LOGICAL_WRITERS

from ketenstroom.contract.avro_bytes import LENGTHS, string_bytes, zigzag
from producers.rows import DUTCH_MOMENT, normalise_decimal, parse_bool, parse_date, parse_moment

# Whitespace that both str.strip() and pydantic's str_strip_whitespace remove; around a value, anything
# else (e.g. U+001C, which only Python strips) sends the row to the reference path.
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?")
INT = (-(2**31), 2**31 - 1)
LONG = (-(2**63), 2**63 - 1)
_KNOWN = 4096  # distinct values of a text column remembered (the first ones; identifiers never repeat)
_REMEMBER = 65_536  # distinct date (time) strings remembered per column; dates recur a lot
_DOUBLE = struct.Struct("<d")

Step = Callable[[str], Any]  # partner's string -> bytes (or value); ValueError when not plainly valid
Writer = Callable[[Any], bytes]  # Avro-ready value -> Avro bytes
Around = tuple[bytes, bytes]


class NotPlain(ValueError):
    """This value needs the reference path (raised inside the fast path only)."""


# -- steps: partner's string -> Avro bytes of one leaf (or its value, for leaves needed twice) ----------
def _blank(nullable: bool) -> None:
    """A blank value is null where the field may be null; elsewhere the model names the reason."""
    if not nullable:
        raise NotPlain


def text_value(nullable: bool, check: Callable[[Any], Any] | None) -> Step:
    def step(raw: str) -> str | None:
        text = raw.strip()
        if not text:
            _blank(nullable)
            return None
        if len(text) != len(raw) and raw.strip(_ASCII_SPACE) != text:
            raise NotPlain
        return text if check is None else check(text)

    return step


def text_bytes(
    nullable: bool, check: Callable[[Any], Any] | None, branch: bytes, null: bytes | None, around: Around
) -> Step:
    """Text (a string, or a coded value's code) -> bytes: union branch, ``around[0]``, the text,
    ``around[1]`` (a coded value's fixed code system goes before the code, its version after)."""
    before, after, null_bytes = branch + around[0], around[1], null or b""
    known: dict[str, bytes] = {}  # the first distinct values: codes, systems, sexes recur on every row

    def step(raw: str) -> bytes:
        found = known.get(raw)
        if found is not None:
            return found
        text = raw.strip()
        if not text:
            _blank(nullable)
            return null_bytes
        if len(text) != len(raw) and raw.strip(_ASCII_SPACE) != text:
            raise NotPlain
        if check is not None:
            text = check(text)
        data = text.encode()  # a lone surrogate raises UnicodeEncodeError, a ValueError
        n = len(data)
        found = before + (LENGTHS[n] if n < 1 << 13 else zigzag(n)) + data + after
        if len(known) < _KNOWN:
            known[raw] = found
        return found

    return step


def integer_value(nullable: bool, low: int, high: int) -> Step:
    def step(raw: str) -> int | None:
        if raw.isdigit() and raw.isascii() and len(raw) < 19:
            value = int(raw)
            if low <= value <= high:
                return value
            raise NotPlain
        if not raw.strip():
            _blank(nullable)
            return None
        raise NotPlain  # signs, spaces, "1_000", "1.0": pydantic's to judge

    return step


def double_value(nullable: bool) -> Step:
    def step(raw: str) -> float | None:
        if not raw.strip():
            _blank(nullable)
            return None
        text = normalise_decimal(raw)
        if _PLAIN_DECIMAL.fullmatch(text):
            return float(text)
        raise NotPlain

    return step


def boolean_value(nullable: bool) -> Step:
    def step(raw: str) -> bool | None:
        if not raw.strip():
            _blank(nullable)
            return None
        return bool(parse_bool(raw))

    return step


def then(convert: Step, write: Writer) -> Step:
    def step(raw: str) -> bytes:
        return write(convert(raw))

    return step


def remembered(
    nullable: bool,
    branch: bytes,
    null: bytes | None,
    compute: Callable[[str], int],
    seen: dict[str, bytes],
    numbers: dict[str, int] | None = None,
) -> Step:
    """Dates and moments: parsing costs microseconds and the same strings recur (often in two leaves
    filled from one column), so ``seen`` keeps each string's number, zig-zag encoded, per plan;
    ``numbers``, if given, the number itself (for checks that compare it, e.g. plausibility)."""
    null_bytes = null or b""

    def step(raw: str) -> bytes:
        found = seen.get(raw)
        if found is not None:
            return branch + found
        if not raw.strip():
            _blank(nullable)
            return null_bytes
        number = compute(raw)
        data = zigzag(number)
        if len(seen) >= _REMEMBER:
            seen.clear()
            if numbers is not None:
                numbers.clear()
        seen[raw] = data
        if numbers is not None:
            numbers[raw] = number
        return branch + data

    return step


def days(raw: str) -> int:
    return int(LOGICAL_WRITERS["int-date"](parse_date(raw), {}))


def moments(logical: str) -> Callable[[str], int]:
    """``parse_moment`` and fastavro's conversion, as numbers, worked out once per local hour.

    A ``dd-mm-jjjj HH:MM[:SS]`` string is the hour's start plus minutes and seconds, provided the hour
    has one UTC offset throughout: its ``HH:00:00`` and ``HH:59:59`` are parsed by the reference and
    must lie 3599 s apart. Anything else (ISO, the hour clocks change, an impossible date) is parsed
    by the reference every time.
    """
    to_number = LOGICAL_WRITERS[f"long-{logical}"]
    per_second = 1000 if logical == "timestamp-millis" else 1_000_000
    hours: dict[tuple[str, ...], int | None] = {}

    def reference(raw: str) -> int:
        return int(to_number(parse_moment(raw), {}))

    def compute(raw: str) -> int:
        match = DUTCH_MOMENT.fullmatch(raw)
        if match is None:
            return reference(raw)
        day, month, year, hour, minute, second = match.groups()
        minutes, seconds, hour = int(minute or 0), int(second or 0), hour or "00"
        if minutes > 59 or seconds > 59:
            return reference(raw)
        key = (year, month, day, hour)
        if key not in hours:
            first = reference(f"{day}-{month}-{year} {hour}:00:00")
            last = reference(f"{day}-{month}-{year} {hour}:59:59")
            if len(hours) >= _REMEMBER:
                hours.clear()
            hours[key] = first if last - first == 3599 * per_second else None
        start = hours[key]
        if start is None:
            return reference(raw)
        return start + (minutes * 60 + seconds) * per_second

    return compute


def _double_bytes(value: float) -> bytes:
    return _DOUBLE.pack(value)


def _boolean_bytes(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


_BODIES: dict[str, Callable[[Any], bytes]] = {
    "string": string_bytes,
    "long": zigzag,
    "double": _double_bytes,
    "boolean": _boolean_bytes,
}


def writer(kind: str, branch: bytes, null: bytes | None, around: Around = (b"", b"")) -> Writer:
    """Value -> bytes of one leaf, laid out as in ``text_bytes``; None is the union's null."""
    before, after = branch + around[0], around[1]
    body = _BODIES[kind]
    remember = kind == "long"  # delivery time recurs for ~30 rows, the version for most (not floats: -0.0)
    last_value: Any = None
    last_data = b""

    def write(value: Any) -> bytes:
        nonlocal last_value, last_data
        if value is None:
            if null is None:
                raise NotPlain
            return null
        if remember and value == last_value:
            return last_data
        last_value, last_data = value, before + body(value) + after
        return last_data

    return write
