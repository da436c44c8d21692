"""SageMaker training jobs: the CreateTrainingJob request, checked before anything is sent.

The DAG (``training_backend=sagemaker``) and ``streamguard-ml sagemaker config``
build the request here, so what the CLI prints is what ``SageMakerTrainingOperator``
receives.  A request

* runs the packaged code (:mod:`streamguard_ml.packaging`) in the AWS PyTorch
  framework image of the job's region (or a custom image), through the
  ``sagemaker_program`` / ``sagemaker_submit_directory`` hyperparameters;
* reads the run's processed splits as the ``train`` / ``validation`` channels
  (and a model to fine-tune as ``init``), writes ``model.tar.gz`` under the
  output path and checkpoints to S3 so managed spot training can resume;
* carries metric definitions built from :data:`streamguard_ml.train.METRIC_REGEXES`,
  the regexes that parse the entrypoint's own epoch lines;
* has a deterministic name (run, model type, parameters), so a retried task
  finds its job instead of launching a second one.

:func:`validate_request` runs botocore's own ``ParamValidator`` against the
API model and then checks what botocore leaves out: enum values (instance
types), maximum lengths and patterns.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from . import layout
from .config import REGISTRY_NAMES, PipelineConfig
from .packaging import TRAIN_PROGRAM
from .store import Store, StoreError

log = logging.getLogger(__name__)

#: Where SageMaker writes a training job's container log (one stream per host).
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
MAX_NAME_LENGTH = 63
#: Attempts after a failed or stopped job get ``-r2``, ``-r3``...: names are never reused.
MAX_ATTEMPTS = 9
FRAMEWORK_REPOSITORY = "pytorch-training"
#: AWS Deep Learning Containers registry account by region, where it is not the usual one.
DLC_ACCOUNTS = {"af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-northeast-3": "364406365360",
                "eu-south-1": "692866216735", "me-south-1": "217643126080", "cn-north-1": "727897471807",
                "cn-northwest-1": "727897471807", "us-gov-west-1": "442386744353"}
DLC_DEFAULT_ACCOUNT = "763104351884"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


class RequestError(ValueError):
    """The request would be rejected by SageMaker; the message lists every problem."""


# -- names -----------------------------------------------------------------------------------------
def job_name(run: str, model_type: str, digest: str) -> str:
    """``sg-<model_type>-<run>-<hash>``: deterministic, at most 60 characters, SageMaker's charset.

    The hash covers the full run key, the model type and the parameter digest
    (hyperparameters, data, starting model), so truncating a long run id never
    makes two jobs collide, and the same run retrained with other parameters
    gets a new job.  Three characters stay free for :func:`attempt_name`.
    """
    key = layout.run_key(run)
    tag = hashlib.sha256(f"{key}|{model_type}|{digest}".encode()).hexdigest()[:8]
    head = f"sg-{model_type}-"
    room = MAX_NAME_LENGTH - 3 - len(head) - len(tag) - 1
    middle = _NAME_UNSAFE.sub("-", key).strip("-")[:room].strip("-")
    return f"{head}{middle}-{tag}" if middle else f"{head}{tag}"


def attempt_name(base: str, attempt: int) -> str:
    """The name of the n-th attempt: the base name first, then ``base-r2`` ... ``base-r9``."""
    if not 1 <= attempt <= MAX_ATTEMPTS:
        raise ValueError(f"attempt {attempt}: SageMaker jobs of one task get at most {MAX_ATTEMPTS} attempts")
    return base if attempt == 1 else f"{base}-r{attempt}"


# -- image and metrics -----------------------------------------------------------------------------
def processor(instance_type: str) -> str:
    """``gpu`` for the P and G families, ``cpu`` otherwise (Trainium / Inferentia need a custom image)."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    if family.startswith(("trn", "inf")):
        raise RequestError(f"instance type {instance_type} needs a Neuron image: set sagemaker.image_uri")
    return "gpu" if family[:1] in ("p", "g") else "cpu"


def framework_image(region: str, instance_type: str, framework_version: str, py_version: str) -> str:
    """The AWS PyTorch training container for this region, version and processor."""
    account = DLC_ACCOUNTS.get(region, DLC_DEFAULT_ACCOUNT)
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    tag = f"{framework_version}-{processor(instance_type)}-{py_version}"
    return f"{account}.dkr.ecr.{region}.{domain}/{FRAMEWORK_REPOSITORY}:{tag}"


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker metric definitions parsing the entrypoint's epoch lines (the same regexes it is tested with)."""
    from .train import METRIC_REGEXES

    return [{"Name": name, "Regex": regex} for name, regex in METRIC_REGEXES.items()]


# -- where a job reads and writes ------------------------------------------------------------------
@dataclass(frozen=True)
class JobInputs:
    """S3 locations of one job: its channels, its code, its output and its checkpoints."""

    channels: dict[str, str]
    code: str
    output: str
    checkpoints: str


def staging_root(store: Store, cfg: PipelineConfig) -> str:
    """Where a job's inputs live on S3: ``sagemaker.staging_uri``, else the store when it is ``s3://``."""
    root = cfg.sagemaker.staging_uri or (store.root if store.root.startswith("s3://") else "")
    if not root:
        raise RequestError(f"training_backend=sagemaker needs S3, but the store is {store.root}: set "
                           "STREAMGUARD_STORE=s3://bucket/prefix or the Param sagemaker.staging_uri")
    return root.rstrip("/")


def plan_inputs(root: str, run: str, model_type: str, digest: str, code_digest: str,
                fine_tune: bool = False) -> JobInputs:
    """The S3 layout under ``root`` (the run's keys, as in the store; code addressed by its content)."""
    channels = {"train": f"{root}/{layout.split_dir(run, 'train')}/",
                "validation": f"{root}/{layout.split_dir(run, 'val')}/"}
    job_dir = f"{root}/{layout.sagemaker_dir(run, model_type)}"
    if fine_tune:
        channels["init"] = f"{job_dir}/init/"
    return JobInputs(channels=channels, code=f"{root}/{layout.sagemaker_code(code_digest)}",
                     output=f"{job_dir}/output", checkpoints=f"{job_dir}/checkpoints/{digest}")


def stage_inputs(store: Store, staging: Store, run: str, inputs: JobInputs, init_uri: str | None = None) -> None:
    """Copy the channels and the code to ``staging`` (idempotent: same keys, same bytes).

    When the store *is* the staging location the splits are already there and
    nothing is copied.
    """
    from .packaging import source_tarball
    from .store import read_uri_bytes

    if staging.root != store.root:
        for split in ("train", "val"):
            keys = store.list(layout.split_dir(run, split))
            if not keys:
                raise StoreError(f"{store.uri(layout.split_dir(run, split))} is empty: preprocess run {run} first")
            for key in keys:
                staging.write_bytes(key, store.read_bytes(key))
    staging.put_if_absent(staging.key_of(inputs.code), source_tarball())
    if init_uri:
        staging.write_bytes(staging.key_of(inputs.channels["init"]) + "/model.tar.gz", read_uri_bytes(init_uri))


# -- the request -----------------------------------------------------------------------------------
def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "InputMode": "File", "CompressionType": "None",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}}}


def _tags(run: str, model_type: str, extra: dict[str, str]) -> list[dict[str, str]]:
    tags = {"Project": "StreamGuard", "Model": REGISTRY_NAMES[model_type], "ModelType": model_type,
            "Run": layout.run_key(run)[:256], **extra}
    return [{"Key": k, "Value": str(v)} for k, v in tags.items()]


def training_job_request(cfg: PipelineConfig, run: str, model_type: str, name: str, hyperparameters: dict[str, str],
                         inputs: JobInputs, role_arn: str, region: str) -> dict[str, Any]:
    """The CreateTrainingJob request, as boto3 (and ``SageMakerTrainingOperator``) take it."""
    sm = cfg.sagemaker
    instance_type = sm.instance_type(model_type)
    image = sm.image_uri or framework_image(region, instance_type, sm.framework_version, sm.py_version)
    # Framework containers JSON-decode every value, as the SageMaker Python SDK encodes them.
    hp = {**hyperparameters, "sagemaker_program": TRAIN_PROGRAM, "sagemaker_submit_directory": inputs.code,
          "sagemaker_region": region, "sagemaker_job_name": name, "sagemaker_container_log_level": 20}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": role_arn,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File",
                                   "MetricDefinitions": metric_definitions(),
                                   "EnableSageMakerMetricsTimeSeries": True},
        "HyperParameters": {k: json.dumps(v) for k, v in sorted(hp.items())},
        "InputDataConfig": [_s3_channel(ch, uri) for ch, uri in inputs.channels.items()],
        "OutputDataConfig": {"S3OutputPath": inputs.output},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": sm.instance_count,
                           "VolumeSizeInGB": sm.volume_size_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": sm.max_runtime_s},
        "CheckpointConfig": {"S3Uri": inputs.checkpoints, "LocalPath": CHECKPOINT_LOCAL_PATH},
        "EnableManagedSpotTraining": sm.spot,
        "Tags": _tags(run, model_type, sm.tags),
    }
    if sm.spot:
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = sm.max_wait_s
    if sm.subnets:
        request["VpcConfig"] = {"Subnets": list(sm.subnets), "SecurityGroupIds": list(sm.security_group_ids)}
    if sm.kms_key_id:
        request["OutputDataConfig"]["KmsKeyId"] = sm.kms_key_id
        request["ResourceConfig"]["VolumeKmsKeyId"] = sm.kms_key_id
    return validate_request(request)


@lru_cache(maxsize=None)
def _input_shape(operation: str) -> Any:
    """The request shape of a SageMaker API operation, from botocore's service model (loaded once)."""
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).input_shape


def instance_types() -> tuple[str, ...]:
    """Every instance type CreateTrainingJob accepts (the API model's enum)."""
    return tuple(_input_shape("CreateTrainingJob").members["ResourceConfig"].members["InstanceType"].enum)


def validate_request(request: dict[str, Any], operation: str = "CreateTrainingJob") -> dict[str, Any]:
    """Return ``request`` if SageMaker's ``operation`` would accept its shape; else raise :class:`RequestError`.

    botocore's ``ParamValidator`` checks required members, types and minimums;
    this adds the enum values (instance types, input modes...), maximum lengths
    and the API's regex patterns that it does not check.
    """
    from botocore.validate import ParamValidator

    shape = _input_shape(operation)
    report = ParamValidator().validate(request, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _constraint_problems(request, shape, "")
    if problems:
        raise RequestError(f"{operation} request is invalid: " + "; ".join(problems))
    return request


def _constraint_problems(value: Any, shape: Any, path: str) -> list[str]:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return [p for k, v in value.items() if k in shape.members
                for p in _constraint_problems(v, shape.members[k], f"{path}.{k}" if path else k)]
    if kind == "list" and isinstance(value, list):
        found = [p for i, v in enumerate(value) for p in _constraint_problems(v, shape.member, f"{path}[{i}]")]
        limit = shape.metadata.get("max")
        return found + ([f"{path} has {len(value)} items, at most {limit} allowed"] if limit and len(value) > limit
                        else [])
    if kind == "map" and isinstance(value, dict):
        return [p for k, v in value.items() for p in _constraint_problems(k, shape.key, f"{path} key {k!r}")
                + _constraint_problems(v, shape.value, f"{path}[{k!r}]")]
    if kind == "string" and isinstance(value, str):
        return _string_problems(value, shape, path)
    return []


def _string_problems(value: str, shape: Any, path: str) -> list[str]:
    problems = []
    if shape.enum and value not in shape.enum:
        near = [e for e in shape.enum if e.startswith(value.rsplit(".", 1)[0])][:8]
        problems.append(f"{path}={value!r} is not one of the API's {len(shape.enum)} values"
                        + (f" (close: {', '.join(near)})" if near else ""))
    limit = shape.metadata.get("max")
    if limit is not None and len(value) > limit:
        problems.append(f"{path} is {len(value)} characters long, at most {limit} allowed")
    pattern = _compiled(shape.metadata.get("pattern"))
    if pattern is not None and not pattern.fullmatch(value):
        problems.append(f"{path}={value!r} does not match the API pattern {pattern.pattern}")
    return problems


@lru_cache(maxsize=None)
def _compiled(pattern: str | None) -> re.Pattern | None:
    """The API's pattern as a Python regex; None where it uses Java-only classes (``\\p{L}``)."""
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:
        return None


# -- the whole step: plan, stage, request ----------------------------------------------------------
def prepare_training_job(store: Store, run: str, model_type: str, cfg: PipelineConfig, dataset_hash: str,
                         role_arn: str, region: str, staging: Store | None = None,
                         init_uri: str | None = None) -> dict[str, Any]:
    """Build (and, given ``staging``, stage the inputs of) the run's training job for ``model_type``.

    Without ``staging`` nothing is written: that is ``streamguard-ml sagemaker config``.
    """
    from .backends import hyperparameters_for, params_digest
    from .packaging import source_digest

    if not role_arn:
        raise RequestError("no SageMaker execution role: set extra.sagemaker_role_arn on the AWS connection "
                           "or the Variable streamguard_sagemaker_role_arn (CLI: --role-arn)")
    if not region:
        raise RequestError("no AWS region: set region_name on the AWS connection, AWS_DEFAULT_REGION "
                           "or the Param sagemaker.region")
    if model_type == "transformer" and cfg.base_model.startswith(("/", ".", "~")):
        raise RequestError(f"base_model {cfg.base_model} is a local directory the SageMaker container cannot "
                           "see: upload it to S3 and pass its s3:// URI (or a Hugging Face name)")
    hp = hyperparameters_for(cfg, model_type, fine_tune=bool(init_uri))
    digest = params_digest(hp, dataset_hash, init_uri)
    inputs = plan_inputs(staging_root(store, cfg), run, model_type, digest, source_digest(), bool(init_uri))
    request = training_job_request(cfg, run, model_type, job_name(run, model_type, digest), hp, inputs,
                                   role_arn, region)
    if staging is not None:
        stage_inputs(store, staging, run, inputs, init_uri)
        log.info("staged %s inputs: %s; code %s", request["TrainingJobName"], inputs.channels, inputs.code)
    return request


def adopt_model(store: Store, run: str, model_type: str, description: dict[str, Any],
                read_uri: Callable[[str], bytes]) -> dict[str, Any]:
    """Copy a finished job's ``model.tar.gz`` into the run layout, as the local backend leaves it."""
    from .backends import store_trained_model

    name = description["TrainingJobName"]
    if description.get("TrainingJobStatus") != "Completed":
        raise RuntimeError(f"training job {name} is {description.get('TrainingJobStatus')}, not Completed: "
                           f"{description.get('FailureReason', 'no reason given')}")
    uri = description["ModelArtifacts"]["S3ModelArtifacts"]
    try:
        archive = read_uri(uri)
    except Exception as exc:  # botocore raises many types; name the URI and the job
        raise StoreError(f"training job {name} completed but its model {uri} cannot be read: {exc}") from exc
    summary = _training_summary(archive, uri)
    resources = description.get("ResourceConfig", {})
    summary.update(backend="sagemaker", job_name=name, sagemaker={
        "job_arn": description.get("TrainingJobArn"), "model_artifacts": uri,
        "image": description.get("AlgorithmSpecification", {}).get("TrainingImage"),
        "instance_type": resources.get("InstanceType"), "instance_count": resources.get("InstanceCount"),
        "billable_seconds": description.get("BillableTimeInSeconds")})
    return store_trained_model(store, run, model_type, archive, summary)


def _training_summary(archive: bytes, uri: str) -> dict[str, Any]:
    """``training.json`` that the entrypoint writes into every model directory."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        try:
            member = tar.extractfile("training.json")
        except KeyError:
            member = None
        if member is None:
            raise StoreError(f"{uri} has no training.json: it was not written by streamguard_ml.train")
        return json.loads(member.read())
