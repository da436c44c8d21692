"""Ingest → preprocess on small data: quarantine, manifest, shards, resumability, dataset card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamguard_ml import layout
from streamguard_ml.config import PipelineConfig
from streamguard_ml.dataset import load_split
from streamguard_ml.ingest import DatasetError, ingest
from streamguard_ml.preprocess import preprocess, process_shard


def _bad_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"id": "ok1", "code": "def f(c, x):\n    c.execute('S ' + x)\n", "label": 1,
                    "counterfactual": "def f(c, x):\n    c.execute('S ?', (x,))\n"}).encode(),
        b"{broken",
        json.dumps({"id": "nolabel", "code": "def g():\n    return 2\n"}).encode(),
        json.dumps({"id": "nocode", "label": 0}).encode(),
        json.dumps({"id": "syntax", "code": "def h(:\n    return 3\n", "label": 0}).encode(),
        json.dumps({"id": "long", "code": "x = 1\n" * 5000, "label": 0}).encode(),
        b'{"id": "latin1", "code": "def f():\\n    return \xe9\\n", "label": 0}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_bad_input_is_quarantined_with_reason_and_line(store, tmp_path):
    path = _bad_jsonl(tmp_path)
    report = ingest(store, "q", [f"jsonl:{path}", "synthetic:60"])
    assert report["quarantine_reasons"] == {"malformed_json": 1, "missing_code": 1, "missing_label": 1,
                                            "non_utf8": 1, "parse_error": 1, "too_long": 1}
    assert report["accepted"] == 62 and report["quarantined"] == 6
    rows = store.read_jsonl(layout.quarantine("q"))
    assert {r["line"] for r in rows if r["reason"] != "parse_error"} == {2, 3, 4, 6, 7}
    assert all(r["source"] and r["detail"] for r in rows)
    assert report["quarantine_file"] == store.uri(layout.quarantine("q"))


def test_empty_and_single_class_data_stop_with_advice(store, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{bad\n")
    with pytest.raises(DatasetError, match="no usable samples"):
        ingest(store, "e", [f"jsonl:{empty}"])
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"id": str(i), "code": f"def f{i}():\n    return {i}\n", "label": 1}) + "\n"
                           for i in range(10)))
    with pytest.raises(DatasetError, match="all 10 samples are vulnerable.*Add safe"):
        ingest(store, "s", [f"jsonl:{one}"])


def test_preprocess_writes_manifest_shards_and_card(processed_run):
    store, run, cfg, result = processed_run
    assert set(result["splits"]) == {"train", "val", "test"} and result["splits"]["train"] > result["splits"]["test"]
    manifest = store.read_jsonl(layout.manifest(run))
    assert all(set(r) >= {"id", "split", "pair_id", "group"} for r in manifest)
    pair_splits: dict[str, set] = {}
    for r in manifest:
        if r["pair_id"]:
            pair_splits.setdefault(r["pair_id"].split("~aug")[0], set()).add(r["split"])
    assert all(len(s) == 1 for s in pair_splits.values())
    assert not any(r["augmented"] for r in manifest if r["split"] != "train")
    assert any(r["augmented"] for r in manifest if r["split"] == "train")
    card = store.read_json(layout.dataset_card(run, "json"))
    assert card["content_hash"] == result["content_hash"] and len(card["content_hash"]) == 64
    assert card["counts"] and card["lengths"]["tokens"]["max"] > 0
    assert "# Dataset card" in store.read_bytes(layout.dataset_card(run, "md")).decode()


def test_tokens_are_unpadded_and_graphs_load(processed_run):
    store, run, cfg, _ = processed_run
    data = load_split(store.uri(layout.split_dir(run, "test")))
    lengths = data.records["n_tokens"].to_numpy()
    assert len(set(lengths)) > 5 and lengths.max() < 512  # not padded to a fixed size
    ids = data.token_ids(0)
    assert len(ids) == lengths[0] and (ids != 0).all()
    assert data.token_lines(0).min() >= 1
    g = data.graph(0)
    assert g["edge_index"].max() < len(g["node_type"])
    assert data.meta["vocabulary"] and data.meta["base_model"] == cfg.base_model


def test_shards_are_resumable(processed_run):
    store, run, cfg, _ = processed_run
    again = process_shard(store, run, "train", 0, cfg)
    assert again.get("skipped") is True
    changed = PipelineConfig(**{**cfg.__dict__, "augment_copies": 0})
    redone = process_shard(store, run, "val", 0, changed)
    assert not redone.get("skipped")
    process_shard(store, run, "val", 0, cfg)  # restore for the other tests


def test_preprocess_is_reproducible(tiny_base_model, tmp_path):
    from streamguard_ml.store import LocalStore

    hashes = []
    for name in ("a", "b"):
        store = LocalStore(tmp_path / name)
        cfg = PipelineConfig(sources=("synthetic:90",), base_model=tiny_base_model, shard_size=40)
        ingest(store, "r", cfg.sources)
        hashes.append(preprocess(store, "r", cfg)["content_hash"])
    assert hashes[0] == hashes[1]


def test_worker_threads_build_exactly_what_one_call_builds(tiny_base_model):
    """The parallel path (threads, chunks across shards) is not a different pipeline."""
    import numpy as np

    from streamguard_ml.fastgraph import graph_arrays
    from streamguard_ml.preprocess import ShardWorkers
    from streamguard_ml.sources.synthetic import generate_records
    from streamguard_ml.tokens import encode, load_tokenizer

    tokenizer = load_tokenizer(tiny_base_model)
    codes = [r["code"] for r in generate_records(60, seed=11)]
    codes.insert(7, "x = a" + ".b" * 5000 + "\n")  # attribute chain deeper than Python's recursion limit
    with ShardWorkers(2) as pool:
        first, second = pool.submit(tokenizer, codes[:30]), pool.submit(tokenizer, codes[30:])
        parallel = [first(), second()]
    alone, errors = graph_arrays(codes[:30])
    assert errors[7] and errors[7].startswith("RecursionError") and parallel[0][1] == errors
    for key, value in alone.items():
        assert (parallel[0][0][key] == value).all(), key
    assert parallel[1][0]["node_ptr"][-1] == graph_arrays(codes[30:])[0]["node_ptr"][-1]
    tokens = encode(tokenizer, codes[:30])
    assert all(np.array_equal(a, b) for a, b in zip(parallel[0][2].ids, tokens.ids))
    assert all(np.array_equal(a, b) for a, b in zip(parallel[0][2].lines, tokens.lines))


def test_a_function_whose_graph_fails_is_quarantined_not_lost(store, tiny_base_model, tmp_path):
    path = tmp_path / "deep.jsonl"
    rows = [{"id": "deep", "label": 1, "code": "x = a" + ".b" * 5000 + "\n"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PipelineConfig(sources=(f"jsonl:{path}", "synthetic:90"), base_model=tiny_base_model, shard_size=400)
    ingest(store, "deep", cfg.sources)
    result = preprocess(store, "deep", cfg)
    card = store.read_json(layout.dataset_card("deep", "json"))
    assert card["quarantine"]["reasons"].get("graph_error") >= 1 and result["quarantined"] >= 1
    failed = [r for key in store.list(layout.processed("deep")) if key.endswith("quarantine.jsonl")
              for r in store.read_jsonl(key) if r["reason"] == "graph_error"]
    assert len(failed) == card["quarantine"]["reasons"]["graph_error"]
    assert {r["id"].split("~aug")[0] for r in failed} == {"deep"}  # the function (and any augmented copy) only
    assert "deep" not in {r["id"].split("~aug")[0] for r in store.read_jsonl(layout.manifest("deep"))}


def test_tensor_shards_are_compressed_safetensors(processed_run):
    import pyarrow as pa
    from safetensors.numpy import load

    store, run, _, _ = processed_run
    shard = store.uri(layout.shard_dir(run, "train", 0))
    packed = (Path(shard) / "graphs.safetensors.zst").read_bytes()
    with pa.input_stream(pa.BufferReader(packed), compression="zstd") as src:
        arrays = load(src.read())  # a standard zstd stream around plain safetensors
    assert len(packed) * 3 < sum(a.nbytes for a in arrays.values())
    assert {"node_type", "node_tokens", "edge_index", "node_ptr"} <= set(arrays)


def test_reading_parquet_bytes_leaves_nothing_to_abort_the_interpreter_at_exit(tmp_path):
    """pyarrow's thread pool, reading from memory, sometimes aborted Python at exit (~1 run in 3)."""
    import subprocess
    import sys

    from streamguard_ml.ingest import samples_table, table_parquet
    from streamguard_ml.records import Sample

    path = tmp_path / "samples.parquet"
    path.write_bytes(table_parquet(samples_table([Sample(id=str(i), code="x = 1\n" * i, label=i % 2)
                                                  for i in range(50)])))
    script = ("import sys; from pathlib import Path; from streamguard_ml.ingest import parquet_table; "
              "print(parquet_table(Path(sys.argv[1]).read_bytes()).to_pylist()[-1])")
    codes = [subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True).returncode
             for _ in range(8)]
    assert codes == [0] * 8
