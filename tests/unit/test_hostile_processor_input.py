"""Hostile raw messages, property-based: at least 1,000 malformed records through the processor's pure
transform. None may crash it; every one is dead-lettered with a reason and stage, its dead-letter headers
are writable, and curated + dead letters reconcile with what went in. Deterministic (derandomize) and
bounded: the largest input is about 1 MiB.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketenstroom.contract import frame
from processors.transform import Curated, DeadLetter, RawRecord
from tests.unit.test_processor_core import SCHEMAS, _raw, _transformer

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # huge reprs


DECISION, CHAIN = 1, 3  # schema ids the fake registry knows; any other is unknown
TRANSFORMER = _transformer()
TRANSFORMER.writer_schema = lambda schema_id: (
    {  # a registry that also knows a type nobody declared
        DECISION: SCHEMAS["nl.ketenstroom.om.CaseDecision"].parsed,
        CHAIN: SCHEMAS["nl.ketenstroom.curated.ChainEvent"].parsed,
    }.get(schema_id)
    or _unknown(schema_id)
)
VALID = _raw("SEPO").value or b""
PAYLOAD = VALID[5:]
CURATED = TRANSFORMER.transform(_raw("SEPO"))
assert isinstance(CURATED, Curated)
CHAIN_PAYLOAD = CURATED.value[5:]  # a valid ChainEvent: a record of the wrong type for raw.om
REASONS = {"undecodable", "unknown-schema-id", "trailing-bytes", "unknown-record-type"}


def _unknown(schema_id: int) -> Any:
    from ketenstroom.errors import DecodeError

    raise DecodeError(f"schema id {schema_id} is unknown", reason="unknown-schema-id")


def _flip(data: bytes, at: int, byte: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1 :]


def _huge_string_claim(length: int) -> bytes:
    """A payload whose first string says it is ``length`` bytes long (zig-zag varint) but is not."""
    n, out = length << 1, bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + b"x" * 16


header = st.integers(min_value=0, max_value=2**31 - 1).map(lambda i: struct.pack(">bI", 0, i))
# (kind, bytes): every kind but "flipped" must be dead-lettered; a flipped byte may still be a valid record
hostile = st.one_of(
    st.tuples(st.just("noise"), st.binary(max_size=64)),  # empties, shorter than the header
    st.tuples(st.just("magic"), st.integers(1, 255).map(lambda m: bytes([m]) + VALID[1:])),
    st.tuples(st.just("schema-id"), st.integers(4, 2**31 - 1).map(lambda i: frame(i, PAYLOAD))),
    st.tuples(
        st.just("truncated"), st.integers(0, len(PAYLOAD) - 1).map(lambda n: frame(DECISION, PAYLOAD[:n]))
    ),
    st.tuples(
        st.just("flipped"),
        st.builds(_flip, st.just(PAYLOAD), st.integers(0, 10_000), st.integers(0x80, 0xFF)).map(
            lambda p: frame(DECISION, p)  # a varint that never ends, a length that lies, bad UTF-8
        ),
    ),
    st.tuples(
        st.just("wrong-type"), st.sampled_from([frame(DECISION, CHAIN_PAYLOAD), frame(CHAIN, CHAIN_PAYLOAD)])
    ),
    st.tuples(st.just("trailing"), st.binary(min_size=1, max_size=32).map(lambda tail: VALID + tail)),
    st.tuples(
        st.just("oversized-claim"),
        st.integers(2**20, 2**40).map(lambda n: frame(DECISION, _huge_string_claim(n))),
    ),
    st.tuples(st.just("oversized"), st.just(VALID + b"\0" * 2**20)),  # a megabyte of padding
    st.tuples(st.just("framed-noise"), st.builds(lambda h, b: h + b, header, st.binary(max_size=256))),
)


def test_a_thousand_malformed_raw_messages_are_all_dead_lettered_with_a_reason() -> None:
    sizes: list[int] = []
    kinds: set[str] = set()

    @settings(
        max_examples=150,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(hostile, min_size=8, max_size=8))
    def check(batch: list[tuple[str, bytes]]) -> None:
        records = [RawRecord("raw.om", 0, i, b"k", v) for i, (_kind, v) in enumerate(batch)]
        curated, dead = TRANSFORMER.transform_batch(records)
        assert len(curated) + len(dead) == len(records)  # counts reconcile: nothing dropped or added
        through = {c.source.offset for c in curated}
        for i, (kind, _value) in enumerate(batch):
            kinds.add(kind)
            assert kind == "flipped" or i not in through, f"a {kind} record was curated"
        for letter in dead:
            assert isinstance(letter, DeadLetter) and letter.reason in REASONS, letter.reason
            assert letter.stage in {"decode", "transform"} and letter.error
            headers = dict(letter.headers())
            assert headers["ketenstroom.reason"] == letter.reason.encode()
            assert headers["ketenstroom.source.offset"] == str(letter.source.offset).encode()
        sizes.append(len(records))

    check()
    assert sum(sizes) >= 1000 and len(kinds) == 10, (sum(sizes), kinds)


def test_the_valid_message_itself_is_curated() -> None:
    """The control: the bytes every hostile message is made from do get through."""
    assert isinstance(TRANSFORMER.transform(RawRecord("raw.om", 0, 0, b"k", VALID)), Curated)
