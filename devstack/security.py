"""The secured local stack's keys: a CA per machine, the broker's certificate, one password per principal.

Everything is generated into the stack's run directory under the cache (``<cache>/run/secure/pki``),
never into the repository: files holding a key or a password are created mode 0600. The CA and the
broker certificate come from ``trustme`` (a test CA library built on ``cryptography``); the broker's
certificate names ``CN=broker`` (the principal of the mutual-TLS controller listener) and carries
``IP:127.0.0.1`` and ``DNS:localhost``, so clients keep hostname verification on.

Principals: ``admin`` and ``broker`` (the only super users), the components ``processor``, ``sink``,
``monitor`` and ``release``, and one per partner of the chain catalogue. Their SCRAM-SHA-512
credentials are written into the KRaft bootstrap at format time (``--add-scram``) and the same
passwords are Apicurio's embedded users.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ketenstroom.access import COMPONENTS, SUPER_USERS

SCRAM_MECHANISM = "SCRAM-SHA-512"
#: Apicurio roles per principal kind; partners may register (owner-only: their own subjects).
REGISTRY_ROLE_ADMIN = "sr-admin"
REGISTRY_ROLE_DEVELOPER = "sr-developer"
REGISTRY_ROLE_READONLY = "sr-readonly"


def write_private(path: Path, data: str | bytes) -> None:
    """Create/overwrite a file readable by its owner only (it holds a key or a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


@dataclass(frozen=True)
class Pki:
    """Where the secured stack's key material lives."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate (public): clients' ``ssl.ca.location``."""
        return self.directory / "ca.pem"

    @property
    def broker_pem(self) -> Path:
        """Broker private key + certificate chain (PEM keystore), 0600."""
        return self.directory / "broker.pem"

    @property
    def passwords_file(self) -> Path:
        return self.directory / "passwords.json"

    def password_file(self, principal: str) -> Path:
        """One file per principal holding only its password: what a component's settings point at."""
        return self.directory / "principals" / f"{principal}.password"

    def ensure(self, principals: Iterable[str]) -> dict[str, str]:
        """Create the CA, the broker certificate and any missing password; return principal -> password."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not self.broker_pem.is_file() or not self.ca_file.is_file():
            import trustme  # dev dependency: only the secured local stack needs it
            from cryptography.hazmat.primitives import serialization

            ca = trustme.CA(organization_name="ketenstroom local CA")
            leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="broker")
            # Kafka's PEM keystore wants an unencrypted PKCS#8 key; trustme writes PKCS#1
            key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
            pkcs8 = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private(self.broker_pem, pkcs8 + b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
            self.ca_file.write_bytes(ca.cert_pem.bytes())
        stored: dict[str, str] = {}
        if self.passwords_file.is_file():
            stored = json.loads(self.passwords_file.read_text())
        wanted = [*SUPER_USERS, *COMPONENTS, *principals]
        changed = False
        for name in wanted:
            if name not in stored:
                stored[name] = secrets.token_urlsafe(24)
                changed = True
        if changed or not self.passwords_file.is_file():
            write_private(self.passwords_file, json.dumps(stored, indent=2) + "\n")
        for name, password in stored.items():
            path = self.password_file(name)
            if not path.is_file() or path.read_text() != password:
                write_private(path, password)
        return stored

    def passwords(self) -> dict[str, str]:
        stored: dict[str, str] = json.loads(self.passwords_file.read_text())
        return stored


def registry_role(principal: str) -> str:
    """Apicurio role of a principal: admin administers; partners and the processor (curated and DLQ
    subjects) register, owner-only; every other principal reads."""
    if principal == "admin":
        return REGISTRY_ROLE_ADMIN
    if principal in (*SUPER_USERS, *COMPONENTS) and principal != "processor":
        return REGISTRY_ROLE_READONLY
    return REGISTRY_ROLE_DEVELOPER


def scram_args(passwords: dict[str, str]) -> list[str]:
    """``--add-scram`` arguments for ``StorageTool format``: every principal's SCRAM credential."""
    args: list[str] = []
    for name, password in passwords.items():
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return args
