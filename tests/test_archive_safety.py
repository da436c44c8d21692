"""A ``model.tar.gz`` is untrusted input: crafted archives are refused at registration and at load.

Every archive here is built by the test itself: links, ``..`` and absolute paths, the
CVE-2025-4517 chain of nested long symlinks (which walks past ``filter="data"`` on
CPython before 3.11.13 / 3.12.11), devices, members no packer of this pipeline writes,
decompression bombs and files that are no tar at all.  Each must be refused with one
line naming the archive, with nothing written to the registry and nothing written
outside the extraction directory (checked on the filesystem), and a good archive made
by the real packer must still register and load.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from streamguard_ml import layout
from streamguard_ml.inference import LoadedModel, extract_archive, pack_archive
from streamguard_ml.packaging import ArchiveError, ArchiveLimits, check_archive
from streamguard_ml.registry import Registry, RegistryError

GNN_HP = {"hidden": 16, "layers": 1, "heads": 2}


# -- building archives ------------------------------------------------------------------------
def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, linkname, size, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name), data


CONFIG = _file("streamguard_model.json", json.dumps({"model_type": "gnn"}).encode())


def _cve_2025_4517(up: str) -> bytes:
    """The published shape: 16 levels of 247-character folders reached through one-letter
    symlinks, a 254-character symlink that climbs back, then ``escape`` -> ``up`` and a file in it."""
    comp, steps = "d" * 247, "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [CONFIG]
    step_path = ""
    for step in steps:
        members.append((_info(os.path.join(step_path, comp), tarfile.DIRTYPE), None))
        members.append((_info(os.path.join(step_path, step), tarfile.SYMTYPE, comp), None))
        step_path = os.path.join(step_path, comp)
    link = os.path.join(*steps, "l" * 254)
    members.append((_info(link, tarfile.SYMTYPE, "../" * len(steps)), None))
    members.append((_info("escape", tarfile.SYMTYPE, f"{link}/{up}"), None))
    members.append(_file("escape/pwned", b"owned"))
    return _tar(members)


#: name -> builder(relative path from the extraction directory to ``outside``, ``outside`` itself)
CRAFTED: dict[str, Callable[[str, Path], bytes]] = {
    "symlink": lambda up, out: _tar([CONFIG, (_info("encoder", tarfile.SYMTYPE, str(out)), None),
                                     _file("encoder/config.json", b"owned")]),
    "relative-symlink": lambda up, out: _tar([CONFIG, (_info("tokenizer", tarfile.SYMTYPE, up), None),
                                              _file("tokenizer/tokenizer.json", b"owned")]),
    "hardlink": lambda up, out: _tar([CONFIG, (_info("training.json", tarfile.LNKTYPE, str(out / "victim")), None),
                                      _file("training.json", b"owned")]),
    "dotdot": lambda up, out: _tar([CONFIG, _file(f"{up}/pwned", b"owned")]),
    "dotdot-inside-name": lambda up, out: _tar([CONFIG, _file(f"tokenizer/../../{up}/pwned.json", b"owned")]),
    "absolute": lambda up, out: _tar([CONFIG, _file(str(out / "pwned"), b"owned")]),
    "cve-2025-4517": lambda up, out: _cve_2025_4517(up),
    "not-on-the-allow-list": lambda up, out: _tar([CONFIG, _file("sitecustomize.py", b"import os")]),
    "fifo": lambda up, out: _tar([CONFIG, (_info("training.json", tarfile.FIFOTYPE), None)]),
    "device": lambda up, out: _tar([CONFIG, (_info("model.safetensors", tarfile.CHRTYPE), None)]),
    "duplicate-member": lambda up, out: _tar([CONFIG, CONFIG]),
    "no-model-config": lambda up, out: _tar([_file("training.json")]),
    "not-a-tar": lambda up, out: b"not really a model",
    "gzip-but-not-a-tar": lambda up, out: gzip.compress(b"x" * 4000),
    "truncated": lambda up, out: _tar([CONFIG, _file("model.safetensors", os.urandom(64_000))])[:30_000],
}


@pytest.fixture(scope="module")
def gnn_dir(tmp_path_factory) -> Path:
    """A real (untrained, tiny) GNN saved by ``GNNKind.save``: what the packer packs."""
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.kinds import GNNKind

    out = tmp_path_factory.mktemp("gnn")
    kind, meta = GNNKind(), {"vocabulary_size": vocabulary()["size"]}
    kind.save(kind.build(meta, GNN_HP), out, meta, GNN_HP)
    (out / "training.json").write_text("{}")
    return out


@pytest.fixture
def places(tmp_path) -> dict[str, Path]:
    """``outside`` (with one victim file) next to the ``work`` folder that extraction may use."""
    outside, work = tmp_path / "outside", tmp_path / "work"
    outside.mkdir()
    work.mkdir()
    (outside / "victim").write_bytes(b"untouched")
    return {"outside": outside, "work": work, "dest": work / "model"}


def _craft(name: str, places: dict[str, Path]) -> Path:
    up = os.path.relpath(places["outside"], places["dest"])
    path = places["work"].parent / f"{name}.tar.gz"
    path.write_bytes(CRAFTED[name](up, places["outside"]))
    return path


def _assert_nothing_escaped(places: dict[str, Path]) -> None:
    """The victim is untouched and no file the archive carried exists outside the store."""
    outside = places["outside"]
    assert sorted(p.name for p in outside.rglob("*")) == ["victim"]
    assert (outside / "victim").read_bytes() == b"untouched"
    root = places["work"].parent
    carried = [p for p in root.rglob("*") if "store" not in p.relative_to(root).parts and p.is_file()
               and p.read_bytes() == b"owned"]
    assert carried == []


# -- registration -----------------------------------------------------------------------------
def test_a_retry_that_completes_a_half_done_registration_checks_the_source_again(store, tmp_path, monkeypatch):
    """The version was claimed but its copy failed; the source was then swapped for a crafted archive."""
    from archive_support import FAKE_MODEL

    source = tmp_path / "model.tar.gz"
    source.write_bytes(FAKE_MODEL)
    registry = Registry(store)
    real_write = type(store).write_bytes

    def failing(self, key, data):
        if "/artifacts/" in key:
            raise OSError("disk full")
        return real_write(self, key, data)

    monkeypatch.setattr(type(store), "write_bytes", failing)
    with pytest.raises(OSError):
        registry.register("taint-flow-gnn", str(source), {"accuracy": 0.9}, idempotency_key="run-1:gnn")
    monkeypatch.setattr(type(store), "write_bytes", real_write)
    source.write_bytes(_tar([CONFIG, (_info("model.safetensors", tarfile.SYMTYPE, "/etc/passwd"), None)]))
    with pytest.raises(ArchiveError):
        registry.register("taint-flow-gnn", str(source), {"accuracy": 0.9}, idempotency_key="run-1:gnn")
    assert registry.list("taint-flow-gnn") == []


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_registration_refuses_a_crafted_archive_and_writes_nothing(name, places, store):
    archive = _craft(name, places)
    with pytest.raises(ArchiveError) as caught:
        Registry(store).register("taint-flow-gnn", str(archive), {"accuracy": 0.9})
    message = str(caught.value)
    assert str(archive) in message and "\n" not in message
    assert isinstance(caught.value, RegistryError)  # callers catching registry errors see it too
    assert store.list("registry") == []
    _assert_nothing_escaped(places)


def test_a_good_archive_from_the_real_packer_registers_and_loads(gnn_dir, tmp_path, store):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(pack_archive(gnn_dir))
    mv = Registry(store).register("taint-flow-gnn", str(archive), {"accuracy": 0.9})
    assert mv.version == 1 and store.exists(store.key_of(mv.artifact_uri))
    loaded = LoadedModel.from_uri(mv.artifact_uri, tmp_path / "work")
    assert loaded.model_type == "gnn"
    assert sorted(p.name for p in (tmp_path / "work" / "model").iterdir()) == [
        "model.safetensors", "streamguard_model.json", "training.json"]
    scores = loaded.score(loaded.featurize(["def f(c, x):\n    c.execute('SELECT ' + x)\n"]))
    assert 0.0 <= float(scores.prob[0]) <= 1.0


def test_transformer_and_fusion_archives_pass_the_allow_list(gnn_dir, tiny_base_model, tmp_path):
    """The transformer's encoder config and tokenizer files, and the fusion detector's embedded members."""
    import shutil

    from streamguard_ml.kinds import TransformerKind, save_config

    kind = TransformerKind(max_length=64, stride=48)
    hp = {"base_model": tiny_base_model}
    fusion = tmp_path / "fusion"
    (fusion / "transformer").mkdir(parents=True)
    kind.save(kind.build({"base_model": tiny_base_model}, hp), fusion / "transformer", {}, hp)
    shutil.copytree(gnn_dir, fusion / "gnn")
    save_config(fusion, {"model_type": "fusion", "members": ["gnn", "transformer"]})
    (fusion / "training.json").write_text("{}")
    for directory in (fusion / "transformer", fusion):
        names = check_archive(pack_archive(directory), str(directory))
        assert "streamguard_model.json" in names
    assert {"transformer/tokenizer/tokenizer.json", "transformer/encoder/config.json",
            "gnn/model.safetensors"} <= set(check_archive(pack_archive(fusion), "fusion"))


def test_sagemaker_style_names_with_dot_prefix_and_folders_are_accepted(tmp_path):
    """SageMaker's own tar of SM_MODEL_DIR may name members ``./x`` and list the folders."""
    data = _tar([(_info(".", tarfile.DIRTYPE), None), (_info("./streamguard_model.json"), b"{}"),
                 (_info("./encoder", tarfile.DIRTYPE), None), (_info("./encoder/config.json"), b"{}")])
    assert check_archive(data, "sm") == ["encoder/config.json", "streamguard_model.json"]
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(data)
    out = extract_archive(archive, tmp_path / "out")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["encoder", "encoder/config.json",
                                                                          "streamguard_model.json"]


# -- size and member caps -----------------------------------------------------------------------
def _bomb(size: int) -> bytes:
    return _tar([CONFIG, _file("model.safetensors", bytes(size))])


def test_a_decompression_bomb_is_refused_at_registration_and_load(places, store):
    data = _bomb(8 << 20)  # 8 MiB of zeros: about 8 KB compressed
    assert len(data) < 64_000
    small = ArchiveLimits(max_bytes=1 << 20)
    with pytest.raises(ArchiveError, match=r"bomb.tar.gz.*more than 1048576 bytes"):
        check_archive(data, "bomb.tar.gz", small)
    archive = places["work"].parent / "bomb.tar.gz"
    archive.write_bytes(data)
    with pytest.raises(ArchiveError, match="more than 1048576 bytes"):
        extract_archive(archive, places["dest"], small)
    assert not places["dest"].exists() and list(places["work"].iterdir()) == []
    assert check_archive(data, "bomb.tar.gz", ArchiveLimits(max_bytes=16 << 20))  # under the cap it is fine


def test_a_lying_header_cannot_unpack_past_the_cap(places):
    """A 4 MB GNU long-name record (tarfile reads it into memory) counts against the cap while streaming."""
    data = _tar([CONFIG, _file("tokenizer/" + "a" * (4 << 20) + ".json")], fmt=tarfile.GNU_FORMAT)
    with pytest.raises(ArchiveError, match="more than 1048576 bytes"):
        check_archive(data, "long.tar.gz", ArchiveLimits(max_bytes=1 << 20))


def test_the_member_count_is_capped(places):
    data = _tar([CONFIG, *(_file(f"tokenizer/t{i}.json") for i in range(20))])
    with pytest.raises(ArchiveError, match="more than 10 members"):
        check_archive(data, "many.tar.gz", ArchiveLimits(max_members=10))
    assert len(check_archive(data, "many.tar.gz")) == 21


def test_the_default_limits_are_typed_constants():
    from streamguard_ml import packaging

    limits = ArchiveLimits()
    assert limits.max_bytes == packaging.MAX_ARCHIVE_BYTES >= 1 << 30
    assert limits.max_members == packaging.MAX_ARCHIVE_MEMBERS >= 64


# -- load -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_load_refuses_a_crafted_archive_and_writes_nothing_outside(name, places):
    archive = _craft(name, places)
    with pytest.raises(ArchiveError) as caught:
        extract_archive(archive, places["dest"])
    assert str(archive) in str(caught.value) and "\n" not in str(caught.value)
    assert not places["dest"].exists() and list(places["work"].iterdir()) == []  # nothing half-written either
    _assert_nothing_escaped(places)


def test_loaded_model_refuses_a_crafted_archive(places):
    archive = _craft("cve-2025-4517", places)
    with pytest.raises(ArchiveError, match=f"refused model archive {archive}: "):
        LoadedModel.from_uri(str(archive), places["work"])
    _assert_nothing_escaped(places)


# -- the CLI: one line, non-zero exit ---------------------------------------------------------
@pytest.fixture
def tampered_store(gnn_dir, tmp_path, store):
    """A good version registered, then its stored artifact replaced (a store writer, or a version
    registered before archives were checked)."""
    good = tmp_path / "good.tar.gz"
    good.write_bytes(pack_archive(gnn_dir))
    mv = Registry(store).register("taint-flow-gnn", str(good), {"accuracy": 0.9})

    def tamper(data: bytes) -> str:
        store.write_bytes(store.key_of(mv.artifact_uri), data)
        return mv.artifact_uri

    return store, tamper


@pytest.mark.parametrize("name", ["cve-2025-4517", "absolute", "not-a-tar", "gzip-but-not-a-tar"])
def test_predict_prints_one_line_and_exits_non_zero(name, tampered_store, places, tmp_path, capsys, monkeypatch):
    from streamguard_ml.cli import main

    store, tamper = tampered_store
    monkeypatch.setattr(tempfile, "tempdir", str(places["work"]))
    uri = tamper(CRAFTED[name](os.path.relpath(places["outside"], places["work"] / "x" / "model"),
                               places["outside"]))
    inp, outp = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"id": "a", "code": "def g():\n    return 1\n"}) + "\n")
    rc = main(["predict", "--model", "taint-flow-gnn", "--model-version", "1", "--input", str(inp),
               "--output", str(outp), "--store", store.root])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and uri in err[0], err
    assert not outp.exists()
    _assert_nothing_escaped(places)


def test_evaluate_prints_one_line_and_exits_non_zero(processed_run, tampered_store, places, capsys, monkeypatch):
    from streamguard_ml.cli import main

    shared, run, _, _ = processed_run
    store, tamper = tampered_store
    store.upload_dir(shared.download_dir(layout.split_dir(run, "test"), places["work"].parent / "split"),
                     layout.split_dir(run, "test"))
    monkeypatch.setattr(tempfile, "tempdir", str(places["work"]))
    uri = tamper(CRAFTED["symlink"]("", places["outside"]))
    rc = main(["evaluate", "--run", run, "--model", "taint-flow-gnn", "--model-version", "1",
               "--store", store.root])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and uri in err[0] and "symbolic link" in err[0], err
    assert store.list(layout.eval_dir(run, "gnn")) == []
    assert sorted(p.name for p in places["outside"].rglob("*")) == ["victim"]


def test_registry_register_prints_one_line_and_exits_non_zero(places, store, tmp_path, capsys):
    from streamguard_ml.cli import main

    archive = _craft("cve-2025-4517", places)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.9}))
    rc = main(["registry", "register", "--model", "taint-flow-gnn", "--artifact", str(archive), "--metrics",
               str(metrics), "--store", store.root])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and f"refused model archive {archive}" in err[0], err
    assert store.list("registry") == []


def test_predict_in_a_real_process_prints_no_traceback(tampered_store, tmp_path):
    store, tamper = tampered_store
    uri = tamper(b"not really a model")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "code": "def g():\n    return 1\n"}) + "\n")
    out = subprocess.run([sys.executable, "-m", "streamguard_ml.cli", "predict", "--model", "taint-flow-gnn",
                          "--model-version", "1", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
                          "--store", store.root], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert uri in out.stderr and "not a readable gzip-compressed tar" in out.stderr


# -- fine-tuning (--init-model) ---------------------------------------------------------------
def test_init_model_refuses_a_crafted_archive_and_leaves_nothing(places, monkeypatch):
    from streamguard_ml.train import extraction_scope, model_directory

    scratch = places["work"] / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    archive = _craft("cve-2025-4517", places)
    with pytest.raises(SystemExit) as caught, extraction_scope():
        model_directory(str(archive))
    assert str(caught.value.code).startswith(f"--init-model: refused model archive {archive}: member 'ddd")
    assert list(scratch.iterdir()) == []
    _assert_nothing_escaped(places)


def test_init_model_extracts_to_an_unpredictable_folder_removed_after_training(gnn_dir, tmp_path, monkeypatch):
    from streamguard_ml.train import extraction_scope, model_directory

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(pack_archive(gnn_dir))
    with extraction_scope():
        first = model_directory(str(archive))
        second = model_directory(str(tmp_path))  # a folder holding model.tar.gz
        assert (first / "streamguard_model.json").exists() and first != second
        assert str(os.getpid()) not in str(first) and first.parent.parent == scratch
    assert not first.exists() and not second.exists() and list(scratch.iterdir()) == []
    assert model_directory(str(gnn_dir)) == gnn_dir  # a model folder is used as it is


def test_fine_tuning_leaves_no_extraction_behind(processed_run, gnn_dir, tmp_path):
    """The real entrypoint, fine-tuning from a packed GNN: the system temp dir is clean afterwards."""
    from streamguard_ml.dataset import load_split
    from streamguard_ml.kinds import GNNKind

    store, run, _, _ = processed_run
    channels = {c: store.download_dir(layout.split_dir(run, s), tmp_path / c) for c, s in
                (("train", "train"), ("validation", "val"))}
    meta = load_split(channels["train"]).meta
    init = tmp_path / "init"
    init.mkdir()
    kind = GNNKind()
    kind.save(kind.build(meta, GNN_HP), init, meta, GNN_HP)
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(pack_archive(init))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "SM_MODEL_DIR": str(tmp_path / "out"),
           "SM_CHANNEL_TRAIN": str(channels["train"]), "SM_CHANNEL_VALIDATION": str(channels["validation"])}
    out = subprocess.run([sys.executable, "-m", "streamguard_ml.train", "--model-type", "gnn", "--epochs", "1",
                          "--batch-size", "32", "--init-model", str(archive)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "fine-tuning from" in out.stdout
    assert [p.name for p in scratch.iterdir() if p.name.startswith("sg-")] == []
