"""Repositories to scan: a local folder as it is, or an ``s3://bucket/key.tar.gz`` tarball fetched and unpacked.

A tarball is untrusted input (anyone who can write to the bucket can craft one), so it is
unpacked the way :mod:`streamguard_ml.packaging` unpacks model archives: read once as a
stream, member by member, each file created exclusively (``O_EXCL | O_NOFOLLOW``) inside a
fresh folder, within caps on members and unpacked bytes; absolute paths, ``..``, devices and
fifos and links that point outside the folder are refused with the whole archive.  Links
that stay inside are not recreated (a scan reads regular files only), so nothing written can
lead outside the folder.  Unlike a model archive any file name is allowed.

:func:`repository_name` gives each repository a store-safe name that is the same on every
run (the folder's or tarball's name and a short hash of the full URI), so a retry
overwrites its own keys and two repositories called ``app`` do not collide.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

#: Suffixes of a repository tarball (gzip-compressed or plain tar).
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: The most a repository tarball may be, compressed (it is read into memory once).
MAX_TARBALL_BYTES: int = 512 * 1024**2
#: The most it may unpack to (its whole tar stream, headers included).
MAX_UNPACKED_BYTES: int = 4 * 1024**3
#: The most members (files, folders, links) it may hold.
MAX_MEMBERS: int = 200_000
_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RepositoryError(ValueError):
    """A repository that cannot be fetched; the message names the URI, the reason and the fix."""


@dataclass(frozen=True)
class TarballLimits:
    """Caps on one repository tarball (tests pass low ones)."""

    max_tarball_bytes: int = MAX_TARBALL_BYTES
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES
    max_members: int = MAX_MEMBERS


def is_tarball(uri: str) -> bool:
    return uri.lower().endswith(TARBALL_SUFFIXES)


def repository_name(uri: str) -> str:
    """``app-1a2b3c4d``: the folder's (or tarball's) name and 8 hex digits of the URI, store-safe."""
    text = str(uri).rstrip("/") or str(uri)
    base = PurePosixPath(text.removeprefix("s3://").removeprefix("file://")).name or "repository"
    for suffix in TARBALL_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    base = _UNSAFE.sub("-", base).strip("-.")[:48] or "repository"
    return f"{base}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def default_repository() -> Path:
    """This project's own code: the source tree holding the ``streamguard_ml`` package when it is one
    (an editable install or a checkout), else the installed package folder itself (never all of
    ``site-packages``)."""
    package = Path(__file__).resolve().parent
    root = package.parent
    if any((root / marker).is_file() for marker in ("pyproject.toml", "setup.py", "setup.cfg")):
        return root
    return package


def fetch(uri: str, workdir: Path, limits: TarballLimits | None = None) -> Path:
    """A local folder (or ``.py`` file) to scan: a local path as is; an ``s3://`` tarball (or a local
    ``.tar.gz``) downloaded and unpacked safely into a new folder under ``workdir``."""
    uri = str(uri).strip()
    if not uri:
        raise RepositoryError("an empty repository: give a local path or s3://bucket/key.tar.gz")
    limits = limits or TarballLimits()
    if uri.startswith("s3://"):
        if not is_tarball(uri):
            raise RepositoryError(f"{uri}: an S3 repository must be a tarball ({', '.join(TARBALL_SUFFIXES)}); "
                                  "pack the checkout with `git archive --format=tar.gz -o repo.tar.gz HEAD` "
                                  "and upload that")
        return _unpack_into(_download(uri, Path(workdir), limits), uri, Path(workdir), limits)
    if "://" in uri and not uri.startswith("file://"):
        raise RepositoryError(f"{uri}: unsupported repository; give a local path or s3://bucket/key.tar.gz")
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise RepositoryError(f"{uri} does not exist on this worker: give a local directory, git checkout or "
                              ".py file the worker can read, or upload a tarball to s3://bucket/key.tar.gz")
    if path.is_file() and is_tarball(path.name):
        return _unpack_into(path, uri, Path(workdir), limits)
    return path


def _download(uri: str, workdir: Path, limits: TarballLimits) -> Path:
    from .store import StoreError, read_uri_bytes

    try:
        data = read_uri_bytes(uri)
    except StoreError as exc:
        raise RepositoryError(f"cannot fetch repository {uri}: {exc}; check the URI and that this worker's "
                              "AWS credentials can read it") from exc
    if len(data) > limits.max_tarball_bytes:
        raise RepositoryError(f"refused repository tarball {uri}: {len(data)} bytes is over the cap of "
                              f"{limits.max_tarball_bytes} (repositories.MAX_TARBALL_BYTES); exclude build "
                              "outputs and data from the archive")
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".download-", suffix=".tar.gz", dir=workdir)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(name)


def _refuse(uri: str, reason: str) -> RepositoryError:
    return RepositoryError(f"refused repository tarball {uri}: {reason}; pack the checkout with "
                           "`git archive --format=tar.gz -o repo.tar.gz HEAD` (regular files only) and use that")


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:60] + "..." + name[-17:])


class _Capped:
    """The decompressed stream, counted as it is read: no header can make it unpack past the cap."""

    def __init__(self, inner: BinaryIO, uri: str, limit: int):
        self.inner, self.uri, self.limit, self.count = inner, uri, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(min(size, _CHUNK) if size is not None and size >= 0 else _CHUNK)
        self.count += len(data)
        if self.count > self.limit:
            raise _refuse(self.uri, f"it unpacks to more than {self.limit} bytes (the cap, "
                                    "repositories.MAX_UNPACKED_BYTES)")
        return data


def _parts(name: str, uri: str) -> tuple[str, ...]:
    if name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"[A-Za-z]:", name):
        raise _refuse(uri, f"member {_shown(name)} has an absolute or non-POSIX path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(uri, f"member {_shown(name)} climbs out with '..'")
    return parts


def _link_escapes(parts: tuple[str, ...], member: tarfile.TarInfo) -> bool:
    """Whether a link's target leads outside the archive root."""
    target = member.linkname
    if not target or target.startswith("/") or "\\" in target:
        return True
    base = list(parts[:-1]) if member.issym() else []  # a hard link's target is archive-relative
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                return True
            base.pop()
        else:
            base.append(part)
    return False


def _unpack_into(archive: Path, uri: str, workdir: Path, limits: TarballLimits) -> Path:
    """Unpack ``archive`` into a new folder of ``workdir``; the folder appears only when all of it passed."""
    target = workdir / repository_name(uri)
    if target.exists():
        shutil.rmtree(target)
    workdir.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpacking-", dir=workdir)
    try:
        with open(archive, "rb") as raw:
            _unpack(raw, uri, os.path.realpath(staging), limits)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if archive.name.startswith(".download-"):
            archive.unlink(missing_ok=True)
    return _single_top_folder(target)


def _single_top_folder(target: Path) -> Path:
    """``git archive --prefix=app/`` and GitHub tarballs wrap everything in one folder: scan inside it."""
    entries = list(target.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def _unpack(raw: BinaryIO, uri: str, root: str, limits: TarballLimits) -> None:
    magic = raw.read(2)
    raw.seek(0)
    inner: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw  # type: ignore[assignment]
    stream = _Capped(inner, uri, limits.max_unpacked_bytes)
    declared = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar, 1):
                if count > limits.max_members:
                    raise _refuse(uri, f"it holds more than {limits.max_members} members (the cap, "
                                       "repositories.MAX_MEMBERS)")
                parts = _parts(member.name, uri)
                declared += member.size
                if declared > limits.max_unpacked_bytes:
                    raise _refuse(uri, f"it unpacks to more than {limits.max_unpacked_bytes} bytes (the cap, "
                                       "repositories.MAX_UNPACKED_BYTES)")
                if member.issym() or member.islnk():
                    if _link_escapes(parts, member):
                        raise _refuse(uri, f"member {_shown(member.name)} links outside the repository "
                                           f"({_shown(member.linkname)})")
                    continue  # inside links are not recreated: the scan reads regular files only
                if member.isdev() or member.isfifo():
                    raise _refuse(uri, f"member {_shown(member.name)} is a device or fifo")
                if not parts:
                    continue  # the archive root itself (".")
                dest = os.path.join(root, *parts)
                if member.isdir():
                    os.makedirs(dest, mode=0o755, exist_ok=True)
                    continue
                if not member.isreg() or member.issparse():
                    continue  # pax headers and the like carry no file
                os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
                if os.path.realpath(os.path.dirname(dest)) != os.path.join(root, *parts[:-1]):
                    raise _refuse(uri, f"member {_shown(member.name)} would be written through a link")
                try:
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                except FileExistsError:
                    raise _refuse(uri, f"member {_shown(member.name)} appears twice") from None
                handle = tar.extractfile(member)
                with os.fdopen(fd, "wb") as out:
                    while handle is not None and (chunk := handle.read(_CHUNK)):
                        out.write(chunk)
            while stream.read(_CHUNK):  # the gzip trailer (truncation, CRC) and any trailing data
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _refuse(uri, f"it is not a readable tar or gzip-compressed tar ({exc or type(exc).__name__})") from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        raise _refuse(uri, f"a file and a folder share the path {exc.filename}") from exc


__all__ = ["MAX_MEMBERS", "MAX_TARBALL_BYTES", "MAX_UNPACKED_BYTES", "RepositoryError", "TarballLimits",
           "default_repository", "fetch", "is_tarball", "repository_name"]
