"""The artifact store: a local directory or ``s3://bucket/prefix`` behind one interface.

Everything the pipeline writes (raw samples, shards, models, registry entries,
feedback) goes through a :class:`Store`, addressed by a relative POSIX *key*.
Tasks hand each other URIs, never data.  Writes are atomic (temp file + rename
locally; single PUT on S3) so a retried task never leaves half a file behind,
and the two conditional-write primitives (:meth:`Store.put_if_absent`,
:meth:`Store.replace_if`) are what the registry builds its concurrency safety on.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator


class StoreError(RuntimeError):
    """A store operation failed; the message names the URI involved."""


def safe_key(key: str) -> str:
    """Normalise a key and refuse anything that could escape the store root."""
    parts = PurePosixPath(key.strip("/")).parts
    if not parts or any(p in ("..", "") for p in parts):
        raise StoreError(f"unsafe or empty store key {key!r}: use a relative path without '..'")
    return "/".join(parts)


class Store(ABC):
    """Common behaviour; subclasses implement bytes in and out."""

    root: str

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write only if nothing is there yet; True when this call created it."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Content and an opaque version token, or None when absent."""

    @abstractmethod
    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        """Write only if the key still has version ``token`` (None: still absent)."""

    # -- files ---------------------------------------------------------------
    def upload_file(self, path: str | Path, key: str) -> str:
        self.write_bytes(key, Path(path).read_bytes())
        return self.uri(key)

    def download_file(self, key: str, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.read_bytes(key))
        return path

    def upload_dir(self, directory: str | Path, prefix: str) -> list[str]:
        """Copy a local tree under ``prefix``; returns the keys written."""
        directory = Path(directory)
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{safe_key(prefix)}/{path.relative_to(directory).as_posix()}"
            self.upload_file(path, key)
            keys.append(key)
        return keys

    def download_dir(self, prefix: str, directory: str | Path) -> Path:
        """Copy every key under ``prefix`` into ``directory`` (relative layout kept)."""
        directory = Path(directory)
        prefix = safe_key(prefix)
        for key in self.list(prefix):
            self.download_file(key, directory / key[len(prefix) + 1 :])
        return directory

    def copy_prefix(self, source: str, target: str) -> list[str]:
        """Copy every key under ``source`` to the same relative key under ``target``."""
        source, target = safe_key(source), safe_key(target)
        keys = self.list(source)
        for key in keys:
            self.copy_key(key, f"{target}/{key[len(source) + 1 :]}")
        return keys

    def copy_key(self, source: str, target: str) -> None:
        self.write_bytes(target, self.read_bytes(source))

    @contextlib.contextmanager
    def local_dir(self, prefix: str) -> Iterator[Path]:
        """A local directory holding ``prefix`` for code that needs real paths."""
        with tempfile.TemporaryDirectory(prefix="sg-") as tmp:
            yield self.download_dir(prefix, tmp)

    # -- structured helpers --------------------------------------------------
    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self.read_bytes(key))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.uri(key)} is not valid JSON: {exc}") from exc

    def write_json(self, key: str, obj: Any) -> str:
        self.write_bytes(key, json_bytes(obj))
        return self.uri(key)

    def write_jsonl(self, key: str, rows: Iterable[dict]) -> str:
        body = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
        self.write_bytes(key, body.encode())
        return self.uri(key)

    def read_jsonl(self, key: str) -> list[dict]:
        return [json.loads(line) for line in self.read_bytes(key).decode().splitlines() if line]

    def key_of(self, uri: str) -> str:
        """Inverse of :meth:`uri` for URIs inside this store."""
        base = self.uri("x")[:-1]
        if not uri.startswith(base):
            raise StoreError(f"{uri} is not inside store {self.root}")
        return safe_key(uri[len(base) :])


def json_bytes(obj: Any) -> bytes:
    """Deterministic JSON so re-runs write byte-identical artifacts."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def content_token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore(Store):
    """A directory; atomic renames plus an ``flock`` for conditional writes."""

    def __init__(self, root: str | Path):
        self.path = Path(str(root).removeprefix("file://")).expanduser().resolve()
        self.root = str(self.path)

    def _p(self, key: str) -> Path:
        return self.path / safe_key(key)

    def uri(self, key: str) -> str:
        return str(self._p(key))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._p(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.uri(key)} does not exist") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._p(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def upload_file(self, path: str | Path, key: str) -> str:
        target = self._p(key)
        if Path(path).resolve() != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return str(target)

    def copy_key(self, source: str, target: str) -> None:
        self.upload_file(self._p(source), target)

    def exists(self, key: str) -> bool:
        return self._p(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self._p(prefix) if prefix else self.path
        if base.is_file():
            return [safe_key(prefix)]
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        path = self._p(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock = self._p(key).with_name(f".{self._p(key).name}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._p(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)  # atomic and fails if the target exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        if not self.exists(key):
            return None
        data = self.read_bytes(key)
        return data, content_token(data)

    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        with self._locked(key):
            current = self.read_versioned(key)
            if (current[1] if current else None) != token:
                return False
            self.write_bytes(key, data)
            return True

    @contextlib.contextmanager
    def local_dir(self, prefix: str) -> Iterator[Path]:
        yield self._p(prefix)


class S3Store(Store):
    """``s3://bucket/prefix`` through boto3 (which honours ``AWS_ENDPOINT_URL``).

    Conditional writes use S3's ``If-None-Match: *`` and ``If-Match: <etag>``,
    so concurrent writers cannot overwrite each other.
    """

    def __init__(self, uri: str, client: Any = None):
        rest = uri.removeprefix("s3://")
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise StoreError(f"{uri!r} has no bucket: use s3://BUCKET/PREFIX")
        self.prefix = prefix.strip("/")
        self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _k(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._k(key)}"

    def _error(self, exc: Exception, key: str) -> StoreError:
        return StoreError(f"{self.uri(key)}: {exc}")

    def read_bytes(self, key: str) -> bytes:
        got = self.read_versioned(key)
        if got is None:
            raise StoreError(f"{self.uri(key)} does not exist")
        return got[0]

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        except Exception as exc:  # botocore raises many types; name the URI
            raise self._error(exc, key) from exc

    def exists(self, key: str) -> bool:
        return self.read_versioned(key) is not None

    def list(self, prefix: str = "") -> list[str]:
        full = self._k(prefix) if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key == full or key.startswith(full.rstrip("/") + "/"):
                    keys.append(key[strip:])
        return sorted(keys)

    def delete(self, key: str) -> None:
        for k in self.list(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._k(k))

    def copy_key(self, source: str, target: str) -> None:
        """Server-side copy: the bytes never leave S3."""
        try:
            self.client.copy_object(Bucket=self.bucket, Key=self._k(target),
                                    CopySource={"Bucket": self.bucket, "Key": self._k(source)})
        except Exception as exc:
            raise self._error(exc, source) from exc

    def _conditional_put(self, key: str, data: bytes, **cond: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **cond)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise self._error(exc, key) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, key) from exc
        return resp["Body"].read(), resp["ETag"]

    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        if token is None:
            return self.put_if_absent(key, data)
        return self._conditional_put(key, data, IfMatch=token)


def open_store(root: str | None = None) -> Store:
    """The store at ``root`` (default: ``STREAMGUARD_STORE`` / ``~/.streamguard``)."""
    from .config import default_store

    root = root or default_store()
    if root.startswith("s3://"):
        return S3Store(root)
    if "://" in root and not root.startswith("file://"):
        raise StoreError(f"unsupported store {root!r}: use a local directory or s3://bucket/prefix")
    return LocalStore(root)


def _bucket_store(uri: str) -> tuple[S3Store, str]:
    """The bucket-level store of an ``s3://`` URI and the key inside it."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return S3Store(f"s3://{bucket}", client=_s3_client(os.environ.get("AWS_ENDPOINT_URL", ""))), key.strip("/")


@functools.lru_cache(maxsize=4)
def _s3_client(endpoint: str) -> Any:
    """One boto3 client per endpoint: creating a client costs ~50 ms, sources read many files."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint or None)


def read_uri_bytes(uri: str) -> bytes:
    """Read one object addressed by a full URI or local path (used for sources)."""
    if uri.startswith("s3://"):
        store, key = _bucket_store(uri)
        return store.read_bytes(key)
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise StoreError(f"{uri} does not exist: check the path")
    return path.read_bytes()


def list_uris(uri: str, suffixes: tuple[str, ...]) -> list[str]:
    """A file, or every file ending in ``suffixes`` below a local directory or ``s3://`` prefix (sorted).

    Sources name either one file or a folder of them; both work the same locally and on S3.
    """
    if uri.startswith("s3://"):
        store, key = _bucket_store(uri)
        keys = store.list(key)
        if keys == [key]:
            return [uri]
        found = [store.uri(k) for k in keys if k.endswith(suffixes)]
        if not found:
            raise StoreError(f"{uri} holds no {'/'.join(suffixes)} files: check the bucket and prefix")
        return found
    path = Path(uri.removeprefix("file://")).expanduser()
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise StoreError(f"{uri} does not exist: check the path")
    found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    if not found:
        raise StoreError(f"{uri} holds no {'/'.join(suffixes)} files: point at a file or a folder of them")
    return found


@contextlib.contextmanager
def local_file(uri: str) -> Iterator[Path]:
    """A local path for a source that needs a real file (e.g. SQLite); ``s3://`` objects are downloaded."""
    if not uri.startswith("s3://"):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise StoreError(f"{uri} does not exist: check the path")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="sg-src-") as tmp:
        target = Path(tmp) / PurePosixPath(uri).name
        target.write_bytes(read_uri_bytes(uri))
        yield target
