"""Every connector reads ``s3://`` as well as local paths — over real HTTP against moto's server."""

from __future__ import annotations

import json

import pytest

from streamguard_ml.ingest import ingest
from streamguard_ml.store import StoreError, list_uris

from test_connectors import OSV, make_cvefixes_db

BUCKET = "sg-sources"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 holding one source of every kind (credentials are moto's dummies)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            mp.setenv(key, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        _upload_sources(client, tmp_path_factory.mktemp("s3-sources"))
        yield client
    server.stop()


def _upload_sources(s3, tmp_path) -> None:
    db = make_cvefixes_db(tmp_path / "CVEfixes.db")
    s3.upload_file(str(db), BUCKET, "raw/cvefixes/CVEfixes.db")
    s3.put_object(Bucket=BUCKET, Key="raw/sven/cwe-089.jsonl", Body=_sven_line(1) + _sven_line(2))
    s3.put_object(Bucket=BUCKET, Key="raw/sven/more/cwe-078.jsonl", Body=_sven_line(3))
    s3.put_object(Bucket=BUCKET, Key="raw/osv/2022/GHSA-aaaa-bbbb-cccc.json", Body=json.dumps(OSV))
    rows = [{"id": "j1", "code": "def f(x):\n    return eval(x)\n", "label": 1},
            {"id": "j2", "code": "def g(x):\n    return int(x)\n", "label": 0, "cve": "CVE-2022-3000"}]
    s3.put_object(Bucket=BUCKET, Key="raw/data.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))


def _sven_line(i: int) -> str:
    return json.dumps({"func_name": f"q{i}", "commit_link": f"github.com/acme/repo{i}/commit/abc{i}",
                       "file_name": "db.py", "vul_type": "cwe-089",
                       "func_src_before": f"def q{i}(c, x):\n    c.execute('S{i} %s' % x)\n",
                       "func_src_after": f"def q{i}(c, x):\n    c.execute('S{i} %s', (x,))\n",
                       "line_changes": {"deleted": [{"line_no": 2, "line": "..."}]}}) + "\n"


def test_every_connector_reads_from_s3_like_from_disk(s3, store):
    report = ingest(store, "from-s3", [f"cvefixes:s3://{BUCKET}/raw/cvefixes/CVEfixes.db",
                                       f"sven:s3://{BUCKET}/raw/sven", f"jsonl:s3://{BUCKET}/raw/data.jsonl",
                                       f"osv:s3://{BUCKET}/raw/osv/"])
    assert report["inputs_per_source"] == {f"cvefixes:s3://{BUCKET}/raw/cvefixes/CVEfixes.db": 6,
                                           f"sven:s3://{BUCKET}/raw/sven": 6,
                                           f"jsonl:s3://{BUCKET}/raw/data.jsonl": 2}
    assert report["accepted"] == 5 + 6 + 2 and report["advisories"]["enriched_records"] == 1
    quarantine = store.read_jsonl("runs/from-s3/ingest/quarantine.jsonl")
    assert [q["source"].split("#")[0] for q in quarantine] == [f"s3://{BUCKET}/raw/cvefixes/CVEfixes.db"]


def test_s3_paths_that_hold_nothing_say_so(s3):
    with pytest.raises(StoreError, match="holds no .jsonl"):
        list_uris(f"s3://{BUCKET}/nothing-here", (".jsonl",))
    assert list_uris(f"s3://{BUCKET}/raw/sven", (".jsonl",)) == [
        f"s3://{BUCKET}/raw/sven/cwe-089.jsonl", f"s3://{BUCKET}/raw/sven/more/cwe-078.jsonl"]


def test_preprocess_publish_and_adopt_on_an_s3_store(s3, tiny_base_model):
    """The production configuration: the artifact store itself on S3 (adoption copies server-side)."""
    from streamguard_ml import layout
    from streamguard_ml.config import PipelineConfig
    from streamguard_ml.preprocess import preprocess
    from streamguard_ml.publication import adopt, latest, publish
    from streamguard_ml.store import open_store

    store = open_store(f"s3://{BUCKET}/store")
    cfg = PipelineConfig(sources=("synthetic:90",), base_model=tiny_base_model, shard_size=40)
    ingest(store, "nightly", cfg.sources)
    dataset = preprocess(store, "nightly", cfg)
    publish(store, "nightly", dataset)
    adopted = adopt(store, "training-1", latest(store))
    assert adopted["content_hash"] == dataset["content_hash"]
    copied = store.list(layout.processed("training-1"))
    assert len(copied) == len(store.list(layout.processed("nightly"))) > 10
    assert any(k.endswith("graphs.safetensors.zst") for k in copied)
