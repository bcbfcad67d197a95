"""Pseudonyms re-keyed per study: HMAC-SHA-256 of the platform pseudonym under a study key.

``study key = HMAC-SHA-256(extract key, "ketenstroom.extract-study-key/1" 0x1f study id)`` and
``study pseudonym = first 32 hex of HMAC-SHA-256(study key, kind 0x1f platform pseudonym)`` with kind
``case`` or ``person`` (domain separation, so a case and a person never share a value). The same study
id gives the same pseudonyms on every rerun; another study id gives unrelated ones, and without the
extract key nobody can link either to the platform's pseudonyms (DOMAIN.md §4.4: recipient-specific
pseudonyms, domain-separated keys). 32 hex digits (128 bits) also make a study pseudonym impossible
to mistake for a platform one (64 hex).

The HMAC is computed inside DuckDB, vectorised (``sha256`` over the padded key bytes, RFC 2104), with
the key passed as query parameters, never in the SQL text; ``study_pseudonym`` is the reference
implementation in Python the tests compare it with.
"""

from __future__ import annotations

import hashlib
import hmac

DERIVATION = "ketenstroom.extract-study-key/1"
LENGTH = 32  # hex digits kept
_BLOCK = 64  # SHA-256 block size in bytes


def study_key(secret: bytes, study: str) -> bytes:
    return hmac.new(secret, f"{DERIVATION}\x1f{study}".encode(), hashlib.sha256).digest()


def study_pseudonym(key: bytes, kind: str, pseudonym: str) -> str:
    """Reference implementation (tests, spot checks): one value, the way the SQL computes it."""
    return hmac.new(key, f"{kind}\x1f{pseudonym}".encode(), hashlib.sha256).hexdigest()[:LENGTH]


def pads(key: bytes) -> dict[str, bytes]:
    """The HMAC inner and outer padded keys, as query parameters ``$ipad`` / ``$opad``."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return {"ipad": bytes(b ^ 0x36 for b in key), "opad": bytes(b ^ 0x5C for b in key)}


def rekey_sql(column: str, kind: str) -> str:
    """SQL for the study pseudonym of ``column`` (NULL stays NULL); needs the ``pads`` parameters."""
    if kind not in ("case", "person"):
        raise ValueError(f"kind {kind!r} is not case or person")
    message = f"encode('{kind}' || chr(31) || {column})"
    return f"substr(sha256($opad || unhex(sha256($ipad || {message}))), 1, {LENGTH})"
