"""The artifact store: a local directory or ``s3://bucket/prefix`` behind one interface.

Everything the pipeline writes (raw samples, shards, models, registry entries,
feedback) goes through a :class:`Store`, addressed by a relative POSIX *key*.
Tasks hand each other URIs, never data.  Writes are atomic (temp file + rename
locally; single PUT on S3) so a retried task never leaves half a file behind,
and the two conditional-write primitives (:meth:`Store.put_if_absent`,
:meth:`Store.replace_if`) are what the registry builds its concurrency safety on.

A local write killed before its rename (``kill -9``, a lost machine) leaves its
temporary file, a hidden ``.<name>.<owner>.<random>.part`` next to the target
that no listing shows.  ``<owner>`` (:func:`process_owner`) names the writing
process -- host, a machine id, pid and start time -- so
:meth:`Store.sweep_partial_writes` can tell a dead writer's leftovers from a live
one's work in progress.  On S3 an interrupted PUT leaves nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator


log = logging.getLogger(__name__)

#: Suffix of a local write's temporary file (see the module docstring).
PARTIAL_SUFFIX = ".part"
#: A temporary file whose writer cannot be checked (another machine's, or one written before
#: owners were recorded) is removed by a sweep once it is this old; no write takes this long.
PARTIAL_MAX_AGE_S: float = 6 * 3600.0
_OWNER = re.compile(r"(?P<host>[A-Za-z0-9-]{0,24})_(?P<node>[0-9a-f]{12})_(?P<pid>[0-9]+)_(?P<start>[0-9]+)")
_PARTIAL = re.compile(r"\..+\.(?P<owner>[A-Za-z0-9_-]+)\.[a-z0-9_]+" + re.escape(PARTIAL_SUFFIX))
_LEGACY_PARTIAL = re.compile(r"\..+\.[a-z0-9_]{8}")  # tempfile.mkstemp's names before owners were recorded


class StoreError(RuntimeError):
    """A store operation failed; the message names the URI involved."""


def _proc_stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` fields after the command name (state first), or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


@functools.lru_cache(maxsize=1)
def _node_id() -> str:
    """This boot of this machine *and* pid namespace (12 hex digits): pids mean something only within one."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


_owner_cache: dict[int, str] = {}


def process_owner() -> str:
    """``<host>_<node>_<pid>_<start>``: who writes a temporary file or claims a ledger slot.

    The start time (clock ticks since boot, 0 where ``/proc`` is missing) tells a reused
    pid from the original process; cached per pid, so a forked child gets its own.
    """
    pid = os.getpid()
    if pid not in _owner_cache:
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:24]
        stat = _proc_stat(pid)
        start = stat[19] if stat and len(stat) > 19 else "0"
        _owner_cache[pid] = f"{host}_{_node_id()}_{pid}_{start}"
    return _owner_cache[pid]


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by :func:`process_owner` still runs: None when that cannot be told here.

    Only a process of this machine and pid namespace can be checked; a zombie (killed, not
    yet reaped) and a pid reused by another process count as gone.
    """
    match = _OWNER.fullmatch(owner)
    if match is None or match["node"] != _node_id():
        return None
    pid, start = int(match["pid"]), match["start"]
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X") and (start == "0" or (len(stat) > 19 and stat[19] == start))
    if Path("/proc/self/stat").exists():
        return False
    try:  # no /proc (macOS): signal 0 asks whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def sweep_partial_writes(self, prefix: str) -> list[str]:
        """Remove what writes killed part-way left under ``prefix``; returns the keys removed.

        Nothing to do by default: on S3 a PUT is all or nothing.
        """
        return []

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

    @contextlib.contextmanager
    def _partial(self, path: Path) -> Iterator[tuple[int, str]]:
        """A temporary file next to ``path`` named after this process; removed if the block fails."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{process_owner()}.",
                                   suffix=PARTIAL_SUFFIX)
        try:
            yield fd, tmp
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._p(key)
        with self._partial(path) as (fd, tmp):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)

    def upload_file(self, path: str | Path, key: str) -> str:
        target = self._p(key)
        if Path(path).resolve() != target:
            with self._partial(target) as (fd, tmp):
                os.close(fd)
                shutil.copyfile(path, tmp)
                os.replace(tmp, target)
        return str(target)

    def sweep_partial_writes(self, prefix: str) -> list[str]:
        """Remove temporary files under ``prefix`` whose writer is gone (see the module docstring).

        A file of a live process of this machine is kept; one whose writer cannot be checked
        (another machine's, or an older naming) is removed once :data:`PARTIAL_MAX_AGE_S` old.
        """
        base = self._p(prefix)
        removed = []
        for path in sorted(base.rglob(".*")) if base.is_dir() else []:
            if path.is_file() and self._abandoned(path):
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    path.unlink()
                    removed.append(path.relative_to(self.path).as_posix())
                    log.warning("removed %s (%d bytes), left by a write that was killed part-way", path, size)
        return removed

    @staticmethod
    def _abandoned(path: Path) -> bool:
        match = _PARTIAL.fullmatch(path.name)
        if match is None and not _LEGACY_PARTIAL.fullmatch(path.name):
            return False
        alive = owner_alive(match["owner"]) if match else None
        if alive is not None:
            return not alive
        with contextlib.suppress(FileNotFoundError):
            return time.time() - path.stat().st_mtime > PARTIAL_MAX_AGE_S
        return False

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
        with self._partial(path) as (fd, tmp):
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
        """One line naming what failed; a missing bucket says which one and how to fix it."""
        if _error_code(exc) == "NoSuchBucket":
            return StoreError(f"S3 bucket {self.bucket!r} does not exist (store {self.root}): create it "
                              f"(aws s3 mb s3://{self.bucket}) or point --store / STREAMGUARD_STORE at an "
                              "existing bucket")
        where = self.uri(key) if key else self.root
        return StoreError(f"{where}: {' '.join(str(exc).split()) or type(exc).__name__}")

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
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key == full or key.startswith(full.rstrip("/") + "/"):
                        keys.append(key[strip:])
        except Exception as exc:  # botocore raises many types; name the URI
            raise self._error(exc, prefix) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        for k in self.list(key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._k(k))
            except Exception as exc:
                raise self._error(exc, k) from exc

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
            if _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise self._error(exc, key) from exc
        except Exception as exc:
            raise self._error(exc, key) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            return resp["Body"].read(), resp["ETag"]
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, key) from exc
        except Exception as exc:
            raise self._error(exc, key) from exc

    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        if token is None:
            return self.put_if_absent(key, data)
        return self._conditional_put(key, data, IfMatch=token)


def _error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchBucket``, ``412``, ...), else ''."""
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


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
