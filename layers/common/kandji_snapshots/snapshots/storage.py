"""Object storage adapters: S3 in Lambda, a folder for local runs, memory for tests.

The domain only needs put, get, stream, list and delete by key, so that is all
an `ObjectStore` is.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from kandji_snapshots.errors import SnapshotWriteError

logger = logging.getLogger(__name__)
MAX_LOGGED_KEYS = 100  # per log line: enough to clean up by hand, short enough for CloudWatch


class ObjectNotFound(KeyError):
    pass


class ObjectStore(Protocol):
    location: str  # how to show the store to a person: s3://bucket or a folder path

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            content_encoding: str | None = None) -> None: ...

    def create(self, key: str, body: bytes, *, content_type: str = "application/json") -> bool:
        """Write `key` only if it does not exist yet (atomically); False when it already did."""
        ...

    def get(self, key: str) -> bytes: ...

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The body and its version tag (S3's ETag): what `replace` is conditional on."""
        ...

    def replace(self, key: str, body: bytes, *, version: str, content_type: str = "application/json") -> bool:
        """Write `key` only if it is still at `version` (atomically); False when it changed or is gone."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]: ...

    def delete(self, keys: Iterable[str]) -> None: ...


class S3ObjectStore:
    def __init__(self, s3_client: Any, bucket: str):
        self._s3 = s3_client
        self.bucket = bucket
        self.location = f"s3://{bucket}"

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            content_encoding: str | None = None) -> None:
        extra = {"ContentEncoding": content_encoding} if content_encoding else {}
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **extra)
        except Exception as error:  # botocore raises many types; all mean "not written"
            raise SnapshotWriteError(
                f"Writing s3://{self.bucket}/{key} failed ({_aws_error(error)}). Check that the bucket "
                "exists and the function's role may write to it. Nothing was committed.") from error

    def create(self, key: str, body: bytes, *, content_type: str = "application/json") -> bool:
        return self._conditional_put(key, body, content_type, IfNoneMatch="*")

    def replace(self, key: str, body: bytes, *, version: str, content_type: str = "application/json") -> bool:
        return self._conditional_put(key, body, content_type, IfMatch=version)

    def _conditional_put(self, key: str, body: bytes, content_type: str, **condition: str) -> bool:
        for attempt in range(5):
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **condition)
                return True
            except Exception as error:
                code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
                # 412: the key exists (If-None-Match) or changed (If-Match); 404: gone (If-Match)
                if code in ("PreconditionFailed", "NoSuchKey", "404"):
                    return False
                if code == "ConditionalRequestConflict" and attempt < 4:  # 409: a concurrent write; ask again
                    continue
                raise SnapshotWriteError(
                    f"Writing s3://{self.bucket}/{key} failed ({_aws_error(error)}). Check that the bucket "
                    "exists and the function's role may write to it.") from error
        return False  # unreachable: the loop returns or raises

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.NoSuchKey:
            raise ObjectNotFound(key) from None
        return response["Body"].read(), response["ETag"]

    def get(self, key: str) -> bytes:
        return self.open(key).read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self._s3.exceptions.NoSuchKey:
            raise ObjectNotFound(key) from None

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", []):
                yield item["Key"]

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in batches of 1,000. DeleteObjects answers 200 even when some keys were not deleted:
        those come back in `Errors` and are logged (key and code), not raised, so a caller cleaning up
        after a failure still reports its own error."""
        batch = list(keys)
        failed: list[dict[str, str]] = []
        for start in range(0, len(batch), 1000):
            chunk = batch[start:start + 1000]
            response = self._s3.delete_objects(Bucket=self.bucket,
                                               Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True})
            failed.extend({"key": str(error.get("Key")), "code": str(error.get("Code")),
                           "message": str(error.get("Message", ""))} for error in (response or {}).get("Errors") or [])
        if failed:
            codes = sorted({error["code"] for error in failed})
            logger.error(
                f"could not delete {len(failed)} of {len(batch)} objects from s3://{self.bucket} "
                f"({', '.join(codes)}): they stay in the bucket",
                extra={"bucket": self.bucket, "undeleted": failed[:MAX_LOGGED_KEYS], "undeleted_count": len(failed)})


class LocalObjectStore:
    """Keys as files under a folder: what the local run and DuckDB read."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key {key!r} escapes the store's folder")
        return path

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            content_encoding: str | None = None) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(body)
            partial.replace(path)  # a reader never sees half a file
        except OSError as error:
            raise SnapshotWriteError(f"Writing {path} failed ({error}). Nothing was committed.") from error

    def create(self, key: str, body: bytes, *, content_type: str = "application/json") -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as file:  # O_EXCL: one creator wins
                file.write(body)
        except FileExistsError:
            return False
        except OSError as error:
            raise SnapshotWriteError(f"Writing {path} failed ({error}).") from error
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        body = self.get(key)
        return body, _content_version(body)

    def replace(self, key: str, body: bytes, *, version: str, content_type: str = "application/json") -> bool:
        # One process at a time on a folder (the CLI): compare, then write atomically.
        try:
            if _content_version(self.get(key)) != version:
                return False
        except ObjectNotFound:
            return False
        self.put(key, body, content_type=content_type)
        return True

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        if not self.root.exists():
            return
        keys = sorted(path.relative_to(self.root).as_posix() for path in self.root.rglob("*")
                      if path.is_file() and not path.name.endswith(".partial"))
        for key in keys:
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield key

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class MemoryObjectStore:
    """An in-memory store for unit tests and benchmarks."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.location = "memory://"
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            content_encoding: str | None = None) -> None:
        with self._lock:
            self.objects[key] = bytes(body)

    def create(self, key: str, body: bytes, *, content_type: str = "application/json") -> bool:
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = bytes(body)
            return True

    def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFound(key) from None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        with self._lock:
            body = self.get(key)
            return body, _content_version(body)

    def replace(self, key: str, body: bytes, *, version: str, content_type: str = "application/json") -> bool:
        with self._lock:
            if key not in self.objects or _content_version(self.objects[key]) != version:
                return False
            self.objects[key] = bytes(body)
            return True

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        with self._lock:
            keys = sorted(self.objects)
        return iter([key for key in keys if key.startswith(prefix) and (start_after is None or key > start_after)])

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self.objects.pop(key, None)


def _content_version(body: bytes) -> str:
    """A version tag for stores without one: the content's hash (a claim record carries its own time)."""
    return hashlib.sha256(body).hexdigest()


def _aws_error(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return f"{code}: {response['Error'].get('Message', '')}" if code else type(error).__name__
