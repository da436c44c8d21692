"""Shipping to SageMaker: the packaged inference handler, the hosting and Model Registry
requests (botocore-validated), and the provider's operators against moto's server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

from streamguard_ml.config import ServingConfig
from streamguard_ml.registry import Registry


@pytest.fixture(scope="module")
def gnn_archive(tmp_path_factory) -> bytes:
    """A real (untrained, tiny) GNN saved as safetensors + config and packed as model.tar.gz."""
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.inference import pack_archive
    from streamguard_ml.kinds import GNNKind

    out = tmp_path_factory.mktemp("gnn")
    kind = GNNKind()
    hp = {"hidden": 16, "layers": 1, "heads": 2}
    kind.save(kind.build({"vocabulary_size": vocabulary()["size"]}, hp), out, {"vocabulary_size": vocabulary()["size"]}, hp)
    return pack_archive(out)


REQUEST = {"instances": [{"id": "v", "code": "def f(c, x):\n    c.execute('SELECT ' + x)\n"},
                         {"id": "s", "code": "def g():\n    return 1\n"}]}


def test_packaged_handler_serves_the_safetensors_model(gnn_archive, tmp_path):
    """Run the handler exactly as the serving container would: from the unpacked sourcedir."""
    from streamguard_ml.packaging import INFERENCE_PROGRAM, source_tarball

    code, model = tmp_path / "code", tmp_path / "model"
    with tarfile.open(fileobj=io.BytesIO(source_tarball())) as tar:
        tar.extractall(code, filter="data")
    with tarfile.open(fileobj=io.BytesIO(gnn_archive)) as tar:
        tar.extractall(model, filter="data")
    script = ("import json, sys, sagemaker_inference as h, streamguard_ml\n"
              f"assert streamguard_ml.__file__.startswith({str(code)!r}), streamguard_ml.__file__\n"
              f"m = h.model_fn({str(model)!r})\n"
              f"body, ctype = h.output_fn(h.predict_fn(h.input_fn({json.dumps(REQUEST)!r}, 'application/json'), m), "
              "'application/json')\nprint(ctype); print(body)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=code, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    ctype, body = out.stdout.strip().splitlines()[-2:]
    doc = json.loads(body)
    assert ctype == "application/json" and doc["model_type"] == "gnn"
    assert [p["id"] for p in doc["predictions"]] == ["v", "s"]
    assert all(0 <= p["score"] <= 1 and p["label"] == int(p["score"] >= 0.5) for p in doc["predictions"])


def test_handler_rejects_bad_requests_clearly():
    from streamguard_ml.serving import ServingError, input_fn, output_fn

    assert [r.id for r in input_fn(b'{"code": "x = 1"}\n{"id": "b", "code": "y"}', "application/jsonlines")] == ["0", "b"]
    for body, ctype, needle in (("{oops", "application/json", "not valid JSON"),
                                ("[]", "application/json", "send {"),
                                (b'{"code": "\xff"}', "application/json", "not UTF-8"),
                                ("a,b", "text/csv", "content type 'text/csv'")):
        with pytest.raises(ServingError, match=needle) as caught:
            input_fn(body, ctype)
        assert caught.value.status_code == 400
    # an instance without code is that instance's error row (predict_fn), not a refused request
    assert [(r.id, r.code, r.position) for r in input_fn('{"instances": [{"id": 1}, "x"]}')] == [("1", None, 0),
                                                                                                 ("1", None, 1)]
    with pytest.raises(ServingError, match="accept 'text/html'"):
        output_fn({"predictions": []}, "text/html")


def test_endpoint_rows_are_the_cli_rows_including_the_anomaly_flag(monkeypatch):
    """predict_fn and `streamguard-ml predict` share Scores.rows: the endpoint used to omit `anomalous`."""
    import numpy as np

    from streamguard_ml.inference import Scores
    from streamguard_ml.models.transformer import ANOMALY_THRESHOLD
    from streamguard_ml.serving import input_fn, predict_fn

    scores = Scores(np.array([0.2, 0.9]), np.array([0.5, ANOMALY_THRESHOLD + 0.001]))

    class Scored:  # stands in for LoadedModel: the wiring is under test, not a network
        model_type = "transformer"

        def featurize_each(self, codes):
            return codes, [None] * len(codes)

        def score(self, data):
            return scores

    monkeypatch.setenv("STREAMGUARD_THRESHOLD", "0.8")
    got = predict_fn(input_fn('[{"id": "a", "code": "x"}, {"id": "b", "code": "y"}]'), Scored())
    assert got["predictions"] == scores.rows(["a", "b"], 0.8) and got["threshold"] == 0.8
    assert [(r["label"], r["anomalous"]) for r in got["predictions"]] == [(0, False), (1, True)]


def test_the_endpoint_decides_at_the_versions_threshold_unless_told_otherwise(monkeypatch):
    import numpy as np

    from streamguard_ml.inference import Scores
    from streamguard_ml.serving import ServingError, input_fn, predict_fn

    class Scored:
        model_type, threshold = "gnn", 0.15  # the operating point the archive ships with

        def featurize_each(self, codes):
            return codes, [None] * len(codes)

        def score(self, data):
            return Scores(np.array([0.1, 0.2]))

    monkeypatch.delenv("STREAMGUARD_THRESHOLD", raising=False)
    got = predict_fn(input_fn('[{"id": "a", "code": "x"}, {"id": "b", "code": "y"}]'), Scored())
    assert got["threshold"] == 0.15 and [r["label"] for r in got["predictions"]] == [0, 1]
    monkeypatch.setenv("STREAMGUARD_THRESHOLD", "high")
    with pytest.raises(ServingError, match="STREAMGUARD_THRESHOLD"):
        predict_fn(input_fn('{"id": "a", "code": "x"}'), Scored())


@pytest.fixture
def champion(s3_store, gnn_archive):
    s3_store.write_bytes("runs/r/models/gnn/model.tar.gz", gnn_archive)
    reg = Registry(s3_store)
    mv = reg.register("deploy-test-gnn", s3_store.uri("runs/r/models/gnn/model.tar.gz"),
                      {"accuracy": 0.9, "f1": 0.88, "fpr": 0.05}, lineage={"data_content_hash": "abc", "code_version": "t"})
    reg.promote(mv.model, mv.version)
    return reg, reg.get(mv.model, mv.version)


def test_requests_are_valid_sagemaker_requests(champion):
    from streamguard_ml.deployment import endpoint_requests, model_package, stage

    reg, mv = champion
    staged = stage(reg.store, mv, ServingConfig())
    assert staged["code_url"].startswith(reg.store.root + "/sagemaker/code/") and reg.store.exists(
        reg.store.key_of(staged["code_url"]))
    assert staged["model_data_url"] == mv.artifact_uri  # already on S3: not copied
    req = endpoint_requests(mv, staged, ServingConfig())
    env = req["Model"]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "sagemaker_inference.py" and env["SAGEMAKER_SUBMIT_DIRECTORY"] == staged["code_url"]
    assert req["Endpoint"] == {"EndpointName": "streamguard-deploy-test-gnn",
                               "EndpointConfigName": req["EndpointConfig"]["EndpointConfigName"]}
    assert req == endpoint_requests(mv, stage(reg.store, mv, ServingConfig()), ServingConfig())  # same names on retry
    package = model_package(mv, staged, ServingConfig(), approved=True)
    assert package["model_approval"] == "Approved"
    assert package["extras"]["CustomerMetadataProperties"]["streamguard_version"] == "1"
    with pytest.raises(ValueError, match=r"CreateEndpointConfig .*InstanceType='ml.huge' is not one of"):
        endpoint_requests(mv, staged, ServingConfig(instance_type="ml.huge"))
    with pytest.raises(ValueError, match="unknown setting"):
        ServingConfig.from_mapping({"instance": "ml.m5.large"})


def test_local_store_needs_an_s3_prefix(store, tmp_path):
    from streamguard_ml.deployment import stage

    from archive_support import FAKE_MODEL

    (tmp_path / "m.tar.gz").write_bytes(FAKE_MODEL)
    mv = Registry(store).register("m", str(tmp_path / "m.tar.gz"), {})
    with pytest.raises(ValueError, match="set serving.s3_prefix"):
        stage(store, mv, ServingConfig())


def test_a_retry_skips_what_sagemaker_already_has(champion):
    """What the plan tasks rely on to keep deploy and export idempotent (moto's SageMaker)."""
    import boto3

    from streamguard_ml.deployment import endpoint_requests, exported_package, model_package, pending_endpoint, stage

    reg, mv = champion
    client = boto3.client("sagemaker")
    staged = stage(reg.store, mv, ServingConfig())
    requests = endpoint_requests(mv, staged, ServingConfig())
    assert pending_endpoint(client, requests) == requests
    client.create_model(**requests["Model"])
    assert set(pending_endpoint(client, requests)) == {"EndpointConfig", "Endpoint"}
    client.create_endpoint_config(**requests["EndpointConfig"])
    client.create_endpoint(**requests["Endpoint"])
    assert pending_endpoint(client, requests) is None

    assert exported_package(client, mv.model, mv.version) is None
    args = model_package(mv, staged, ServingConfig(), approved=True)
    client.create_model_package_group(ModelPackageGroupName=mv.model)
    arn = client.create_model_package(ModelPackageGroupName=mv.model, ModelApprovalStatus=args["model_approval"],
                                      **args["extras"])["ModelPackageArn"]
    assert exported_package(client, mv.model, mv.version) == arn
    assert exported_package(client, mv.model, mv.version + 1) is None
