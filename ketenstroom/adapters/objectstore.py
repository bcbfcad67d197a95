"""One storage abstraction for snapshots: a local directory (``file://``) or any S3 API (``s3://``).

Built on obstore, which gives both back ends the same calls, including a create-only put
(exclusive create locally, ``If-None-Match: *`` on S3) for manifests that must be written once.

Failures are classified here: on S3, an endpoint that cannot be reached, times out or answers 429/5xx
raises ``StorageUnavailable`` (transient: the sink waits and retries) once obstore's own retries are
spent (bounded by ``S3Settings.retry_timeout_s``); a missing object, a refused request (4xx) or any
local-directory error is a plain ``StorageError`` (permanent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, GenericError, JoinError, NotFoundError
from obstore.store import LocalStore, S3Store

from ketenstroom.errors import ConfigurationError, StorageError, StorageUnavailable
from ketenstroom.settings import S3Settings


class ObjectExistsError(StorageError):
    """A create-only put found the object already there."""


class ObjectStore:
    """Keys are '/'-separated paths below the store's root (directory or bucket prefix)."""

    def __init__(self, url: str, s3: S3Settings | None = None) -> None:
        self.url = url
        parsed = urlparse(url)
        if parsed.scheme == "file":
            root = Path(parsed.netloc + parsed.path).resolve()
            self._store: LocalStore | S3Store = LocalStore(root, mkdir=True)
            self.root = str(root)
            self._remote = False
        elif parsed.scheme == "s3":
            s3 = s3 or S3Settings()
            config: dict[str, str] = {"region": s3.region}
            if s3.endpoint:
                config["endpoint"] = s3.endpoint
            if s3.access_key_id:
                config["access_key_id"] = s3.access_key_id
            if s3.secret_access_key is not None:
                config["secret_access_key"] = s3.secret_access_key.get_secret_value()
            allow_http = bool(s3.endpoint and s3.endpoint.startswith("http://"))
            self._store = S3Store(
                parsed.netloc,
                prefix=parsed.path.strip("/") or None,
                # obstore types config as a TypedDict of known keys; ours is built as a plain dict
                config=config,  # type: ignore[arg-type]
                client_options={"allow_http": allow_http},
                # obstore retries a failed request itself; bounded, so an outage surfaces as
                # StorageUnavailable that the caller logs and waits out (or reports) in its own way
                retry_config={
                    "max_retries": s3.max_retries,
                    "retry_timeout": timedelta(seconds=s3.retry_timeout_s),
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=5),
                        "base": 2,
                    },
                },
                virtual_hosted_style_request=False,
            )
            self.root = url
            self._remote = True
        else:
            raise ConfigurationError(f"storage url {url!r}: use file://DIRECTORY or s3://BUCKET/PREFIX")

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        """Write an object; with ``create_only`` fail with ObjectExistsError if it already exists."""
        try:
            obstore.put(self._store, key, data, mode="create" if create_only else "overwrite")
        except AlreadyExistsError as exc:
            raise ObjectExistsError(f"{self.url}/{key} already exists") from exc
        except BaseError as exc:
            raise self._failure(f"writing {self.url}/{key}", exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (NotFoundError, FileNotFoundError) as exc:
            raise StorageError(f"{self.url}/{key} does not exist") from exc
        except BaseError as exc:
            raise self._failure(f"reading {self.url}/{key}", exc) from exc

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        except BaseError as exc:
            raise self._failure(f"checking {self.url}/{key}", exc) from exc
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys below ``prefix``, sorted."""
        try:
            keys = [meta["path"] for batch in obstore.list(self._store, prefix or None) for meta in batch]
        except BaseError as exc:
            raise self._failure(f"listing {self.url}/{prefix}", exc) from exc
        return iter(sorted(keys))

    def list_dirs(self, prefix: str) -> tuple[str, ...]:
        """The immediate "directories" below ``prefix`` (which ends with '/'), sorted, without the prefix."""
        try:
            found = obstore.list_with_delimiter(self._store, prefix or None)
        except BaseError as exc:
            raise self._failure(f"listing {self.url}/{prefix}", exc) from exc
        return tuple(sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]))

    def rename(self, source: str, target: str) -> None:
        """Move an object (an atomic rename on a local directory, copy then delete on S3)."""
        self._transfer(obstore.rename, "moving", source, target)

    def copy(self, source: str, target: str) -> None:
        """Copy an object within the store (server-side on S3)."""
        self._transfer(obstore.copy, "copying", source, target)

    def _transfer(self, how: Any, verb: str, source: str, target: str) -> None:
        try:
            how(self._store, source, target)
        except (NotFoundError, FileNotFoundError) as exc:
            raise StorageError(f"{self.url}/{source} does not exist") from exc
        except BaseError as exc:
            raise self._failure(f"{verb} {self.url}/{source} to {target}", exc) from exc

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except BaseError as exc:
            raise self._failure(f"deleting {self.url}/{key}", exc) from exc

    def _failure(self, what: str, exc: BaseError) -> StorageError:
        """Transient (``StorageUnavailable``) for an S3 endpoint that is down, slow or answers 429/5xx."""
        text = str(exc).strip().split("\n")[0] or type(exc).__name__  # not obstore's debug dump
        if self._remote and _unavailable(exc):
            return StorageUnavailable(f"{what} failed: object storage unavailable ({text}); retry later")
        return StorageError(f"{what} failed: {text}")


_CLIENT_ERROR = re.compile(r"status[^0-9]{0,20}4(?!08|29)\d\d", re.IGNORECASE)


def _unavailable(exc: BaseError) -> bool:
    """obstore reports transport failures and server errors as GenericError (or JoinError); a 4xx
    answer other than 408/429 is the request's fault, not the endpoint's."""
    return isinstance(exc, GenericError | JoinError) and not _CLIENT_ERROR.search(str(exc))
