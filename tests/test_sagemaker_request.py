"""The CreateTrainingJob request: names, image, channels, spot, VPC/KMS, metric regexes, validation, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from streamguard_ml.config import PipelineConfig, SageMakerSettings
from streamguard_ml.sagemaker import (RequestError, attempt_name, framework_image, instance_types, job_name,
                                      plan_inputs, training_job_request, validate_request)
from streamguard_ml.train import EPOCH_LINE

ROLE = "arn:aws:iam::123456789012:role/StreamGuardSageMaker"
NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # the API model's TrainingJobName pattern
RUN = "manual__2026-11-23T11:21:56.896679+00:00"


def _request(model_type="gnn", **settings):
    cfg = PipelineConfig.from_mapping({"training_backend": "sagemaker", "sagemaker": settings})
    inputs = plan_inputs("s3://bucket/prefix", RUN, model_type, "d" * 16, "c" * 16, fine_tune=True)
    hp = {"model-type": model_type, "epochs": "3", "learning-rate": "0.002"}
    return training_job_request(cfg, RUN, model_type, job_name(RUN, model_type, "d" * 16), hp, inputs, ROLE,
                                settings.get("region", "eu-west-1"))


def test_job_names_are_deterministic_valid_and_distinct():
    long_run = "scheduled__" + "x" * 200
    names = {job_name(r, m, d) for r in (RUN, long_run, "a") for m in ("gnn", "transformer") for d in ("1", "2")}
    assert len(names) == 12
    assert job_name(RUN, "gnn", "1") == job_name(RUN, "gnn", "1")
    for name in names:
        assert NAME_PATTERN.fullmatch(name) and len(name) <= 60, name
        assert NAME_PATTERN.fullmatch(attempt_name(name, 9)) and len(attempt_name(name, 9)) <= 63
    # a truncated run id still gives different jobs for runs that differ only past the cut
    assert job_name(long_run + "1", "gnn", "1") != job_name(long_run + "2", "gnn", "1")
    assert attempt_name("x", 1) == "x" and attempt_name("x", 2) == "x-r2"


def test_request_for_each_model_passes_botocores_validation():
    for model_type, instance in (("gnn", "ml.p3.8xlarge"), ("transformer", "ml.p3.16xlarge")):
        req = _request(model_type)
        assert req["ResourceConfig"]["InstanceType"] == instance
        assert req["AlgorithmSpecification"]["TrainingImage"] == \
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312"
        hp = {k: json.loads(v) for k, v in req["HyperParameters"].items()}  # as the container decodes them
        assert hp["sagemaker_program"] == "sagemaker_train.py"
        assert hp["sagemaker_submit_directory"] == "s3://bucket/prefix/sagemaker/code/sourcedir-" + "c" * 16 + ".tar.gz"
        assert hp["model-type"] == model_type and hp["epochs"] == "3"
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]}
        assert set(channels) == {"train", "validation", "init"}
        assert channels["validation"].endswith("/processed/val/")
        assert req["EnableManagedSpotTraining"] is True
        assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 8 * 3600, "MaxWaitTimeInSeconds": 12 * 3600}
        assert req["CheckpointConfig"]["S3Uri"].startswith("s3://bucket/prefix/runs/")
        assert {t["Key"]: t["Value"] for t in req["Tags"]}["ModelType"] == model_type
        assert "VpcConfig" not in req and "KmsKeyId" not in req["OutputDataConfig"]


def test_optional_vpc_kms_custom_image_and_on_demand():
    req = _request(subnets=["subnet-0abc"], security_group_ids=["sg-0def"], kms_key_id="alias/streamguard",
                   image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/streamguard:1", spot=False,
                   instance_count=2, tags={"Team": "appsec"})
    assert req["VpcConfig"] == {"Subnets": ["subnet-0abc"], "SecurityGroupIds": ["sg-0def"]}
    assert req["OutputDataConfig"]["KmsKeyId"] == req["ResourceConfig"]["VolumeKmsKeyId"] == "alias/streamguard"
    assert req["AlgorithmSpecification"]["TrainingImage"].endswith("/streamguard:1")
    assert req["EnableManagedSpotTraining"] is False and "MaxWaitTimeInSeconds" not in req["StoppingCondition"]
    assert req["ResourceConfig"]["InstanceCount"] == 2 and {"Key": "Team", "Value": "appsec"} in req["Tags"]


def test_framework_image_follows_region_and_processor():
    assert framework_image("cn-north-1", "ml.m5.xlarge", "2.6.0", "py312") == \
        "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.6.0-cpu-py312"
    assert framework_image("af-south-1", "ml.g5.2xlarge", "2.5.1", "py311").startswith("626614931356.dkr.ecr.af-south-1")
    with pytest.raises(RequestError, match="image_uri"):
        framework_image("us-east-1", "ml.trn1.2xlarge", "2.6.0", "py312")


def test_what_botocore_does_not_check_is_checked():
    assert "ml.p3.8xlarge" in instance_types() and "ml.p3.9xlarge" not in instance_types()
    with pytest.raises(RequestError, match=r"ResourceConfig.InstanceType='ml.p3.9xlarge' is not one of .*ml.p3.8xlarge"):
        _request(gnn_instance_type="ml.p3.9xlarge")
    good = _request()
    for mutate, needle in [
        (lambda r: r.pop("RoleArn"), "Missing required parameter"),
        (lambda r: r["ResourceConfig"].update(InstanceCount="2"), "Invalid type"),
        (lambda r: r.update(TrainingJobName="x" * 64), "at most 63"),
        (lambda r: r.update(TrainingJobName="bad_name"), "pattern"),
        (lambda r: r["OutputDataConfig"].update(S3OutputPath="bucket/no-scheme"), "S3OutputPath"),
        (lambda r: r["AlgorithmSpecification"].update(TrainingInputMode="Streaming"), "TrainingInputMode"),
    ]:
        bad = json.loads(json.dumps(good))
        mutate(bad)
        with pytest.raises(RequestError, match=needle):
            validate_request(bad)


@pytest.mark.parametrize("settings,needle", [
    ({"spot": True, "max_runtime_s": 7200, "max_wait_s": 3600}, "max_wait_s"),
    ({"subnets": ["subnet-1"]}, "security_group_ids"),
    ({"instance_typ": "ml.p3.2xlarge"}, "instance_typ"),
    ({"staging_uri": "/tmp/x"}, "s3://"),
])
def test_bad_settings_name_the_setting(settings, needle):
    with pytest.raises(ValueError, match=needle):
        SageMakerSettings.from_mapping(settings)


def test_metric_definitions_parse_the_entrypoints_epoch_lines():
    definitions = {d["Name"]: d["Regex"] for d in _request()["AlgorithmSpecification"]["MetricDefinitions"]}
    assert set(definitions) == {"train:loss", "train:accuracy", "validation:accuracy", "validation:f1",
                                "validation:auc", "validation:loss"}
    line = EPOCH_LINE.format(epoch=2, epochs=12, loss=0.0662, train_acc=0.9813, val_acc=1.0, val_f1=0.987654,
                             val_auc=0.91234, val_loss=0.3)
    values = {name: float(re.search(regex, line).group(1)) for name, regex in definitions.items()}
    assert values == {"train:loss": 0.0662, "train:accuracy": 0.9813, "validation:accuracy": 1.0,
                      "validation:f1": 0.9877, "validation:auc": 0.9123, "validation:loss": 0.3}
    small = EPOCH_LINE.format(epoch=9, epochs=12, loss=1.5e-7, train_acc=1, val_acc=0.5, val_f1=0, val_auc=0.5,
                              val_loss=0.7)
    assert float(re.search(definitions["train:loss"], small).group(1)) == pytest.approx(0.0, abs=1e-4)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "streamguard_ml.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_sagemaker_config_cli_prints_the_validated_request(processed_run):
    store, run, cfg, dataset = processed_run
    settings = json.dumps({"staging_uri": "s3://bucket/staging", "instance_count": 2})
    out = _cli("sagemaker", "config", "--run", run, "--model-type", "gnn", "--store", store.root, "--epochs", "4",
               "--region", "us-west-2", "--settings", settings, "--json",
               env={"AIRFLOW_VAR_STREAMGUARD_SAGEMAKER_ROLE_ARN": ROLE})
    assert out.returncode == 0, out.stderr
    req = validate_request(json.loads(out.stdout))
    assert req["RoleArn"] == ROLE and req["ResourceConfig"]["InstanceCount"] == 2
    hp = {k: json.loads(v) for k, v in req["HyperParameters"].items()}
    assert hp["epochs"] == "4" and hp["sagemaker_region"] == "us-west-2"
    assert req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == \
        f"s3://bucket/staging/runs/{run}/processed/train/"
    from streamguard_ml.backends import hyperparameters_for, params_digest

    digest = params_digest(hyperparameters_for(PipelineConfig(gnn_epochs=4), "gnn"), dataset["content_hash"], None)
    assert req["TrainingJobName"] == job_name(run, "gnn", digest)  # the name the DAG derives for the same run


@pytest.mark.parametrize("settings,role,needle", [
    ('{"staging_uri": "s3://b/p"}', "", "sagemaker_role_arn"),
    ('{"staging_uri": "s3://b/p", "gnn_instance_type": "ml.p3.9xlarge"}', ROLE, "ml.p3.9xlarge"),
    ("{oops", ROLE, "--settings is not JSON"),
])
def test_sagemaker_config_cli_errors_are_one_line(processed_run, settings, role, needle):
    store, run, _, _ = processed_run
    out = _cli("sagemaker", "config", "--run", run, "--model-type", "gnn", "--store", store.root, "--region",
               "us-east-1", "--settings", settings, env={"AIRFLOW_VAR_STREAMGUARD_SAGEMAKER_ROLE_ARN": role})
    assert out.returncode == 2 and needle in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_local_store_without_staging_says_how_to_fix(processed_run):
    store, run, _, _ = processed_run
    out = _cli("sagemaker", "config", "--run", run, "--model-type", "gnn", "--store", store.root, "--region",
               "us-east-1", "--role-arn", ROLE)
    assert out.returncode == 2 and "STREAMGUARD_STORE=s3://" in out.stderr and "staging_uri" in out.stderr


def test_a_local_base_model_is_refused_for_sagemaker(store):
    from streamguard_ml.sagemaker import prepare_training_job

    cfg = PipelineConfig.from_mapping({"base_model": "/home/me/codebert", "sagemaker": {"staging_uri": "s3://b/p"}})
    with pytest.raises(RequestError, match="s3:// URI"):
        prepare_training_job(store, RUN, "transformer", cfg, "hash", ROLE, "us-east-1")
