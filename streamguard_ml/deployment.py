"""Shipping a registry version to SageMaker: a real-time endpoint for the champion,
and an entry (model package) in SageMaker Model Registry.

The library builds and checks the requests; the Airflow layer hands them to the
provider's operators (``SageMakerEndpointOperator`` creates model, endpoint
config and endpoint; ``SageMakerRegisterModelVersionOperator`` the package).
The endpoint runs the packaged code (``sourcedir.tar.gz``, entry
``sagemaker_inference.py`` → :mod:`streamguard_ml.serving`) on the version's
``model.tar.gz``.  Every request is validated offline against botocore's
service model, and names are derived from the version and the code digest, so
a retry finds what the first attempt created instead of creating it twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .config import ServingConfig
from .packaging import INFERENCE_PROGRAM, source_tarball
from .sagemaker import validate_request
from .serving import JSON, JSON_LINES
from .store import S3Store, Store, read_uri_bytes

VARIANT = "champion"


def staging_store(store: Store, cfg: ServingConfig) -> S3Store:
    if cfg.s3_prefix:
        return S3Store(cfg.s3_prefix)
    if isinstance(store, S3Store):
        return S3Store(f"{store.root}/sagemaker")
    raise ValueError("serving.s3_prefix is empty and the artifact store is local: SageMaker reads models from S3, "
                     "so set serving.s3_prefix to s3://BUCKET/PREFIX")


def stage(store: Store, mv: Any, cfg: ServingConfig, card_key: str | None = None) -> dict[str, str]:
    """Put the inference code (and the model, if it is not on S3 yet) where SageMaker reads them."""
    staging = staging_store(store, cfg)
    code = source_tarball()
    digest = hashlib.sha256(code).hexdigest()[:16]
    code_key = f"code/{digest}/sourcedir.tar.gz"
    if not staging.exists(code_key):
        staging.write_bytes(code_key, code)
    out = {"code_url": staging.uri(code_key), "code_digest": digest, "model_data_url": mv.artifact_uri}
    if not mv.artifact_uri.startswith("s3://"):
        key = f"models/{mv.model}/{mv.version:06d}/model.tar.gz"
        if not staging.exists(key):
            staging.write_bytes(key, read_uri_bytes(mv.artifact_uri))
        out["model_data_url"] = staging.uri(key)
    if card_key and store.exists(card_key):
        key = f"cards/{mv.model}/{mv.version:06d}/model_card.json"
        staging.write_bytes(key, store.read_bytes(card_key))
        out["card_url"] = staging.uri(key)
    return out


def refuse_smoke(mv: Any) -> None:
    """A smoke run's version checks the pipeline, on shrunk data: it never reaches an endpoint or a package."""
    if getattr(mv, "smoke", False):
        raise ValueError(f"{mv.model} v{mv.version} was trained by a smoke run: smoke versions are never deployed "
                         "or exported; train without smoke=true")


def _container(mv: Any, staged: dict[str, str], cfg: ServingConfig) -> dict[str, Any]:
    return {"Image": cfg.image, "ModelDataUrl": staged["model_data_url"],
            "Environment": {"SAGEMAKER_PROGRAM": INFERENCE_PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": staged["code_url"],
                            "SAGEMAKER_REGION": cfg.region, "STREAMGUARD_MODEL": mv.model,
                            "STREAMGUARD_VERSION": str(mv.version)}}


def resource_name(mv: Any, staged: dict[str, str]) -> str:
    """Same version and code → same name (SageMaker names: 63 characters, letters, digits, '-')."""
    return f"{mv.model[:40]}-v{mv.version}-{staged['code_digest'][:8]}"


def endpoint_requests(mv: Any, staged: dict[str, str], cfg: ServingConfig) -> dict[str, dict[str, Any]]:
    """``{"Model", "EndpointConfig", "Endpoint"}`` as ``SageMakerEndpointOperator`` takes them."""
    refuse_smoke(mv)
    name = resource_name(mv, staged)
    tags = [{"Key": "streamguard:model", "Value": mv.model}, {"Key": "streamguard:version", "Value": str(mv.version)}]
    model = {"ModelName": name, "ExecutionRoleArn": cfg.role_arn, "PrimaryContainer": _container(mv, staged, cfg),
             "Tags": tags}
    config = {"EndpointConfigName": name, "Tags": tags,
              "ProductionVariants": [{"VariantName": VARIANT, "ModelName": name, "InstanceType": cfg.instance_type,
                                      "InitialInstanceCount": int(cfg.instance_count)}]}
    endpoint = {"EndpointName": cfg.endpoint_name or f"streamguard-{mv.model}", "EndpointConfigName": name}
    return {"Model": validate_request(model, "CreateModel"),
            "EndpointConfig": validate_request(config, "CreateEndpointConfig"),
            "Endpoint": validate_request(endpoint, "CreateEndpoint")}


def _exists(call: Any, **kwargs: Any) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return call(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound", "404"):
            return None
        raise


def pending_endpoint(client: Any, requests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """What is left to create (a retry drops what exists); None when the endpoint already serves it."""
    endpoint = _exists(client.describe_endpoint, EndpointName=requests["Endpoint"]["EndpointName"])
    config_name = requests["EndpointConfig"]["EndpointConfigName"]
    if endpoint and endpoint.get("EndpointConfigName") == config_name and endpoint.get("EndpointStatus") == "InService":
        return None
    left = dict(requests)
    if _exists(client.describe_model, ModelName=requests["Model"]["ModelName"]):
        left.pop("Model")
    if _exists(client.describe_endpoint_config, EndpointConfigName=config_name):
        left.pop("EndpointConfig")
    return left


def model_package(mv: Any, staged: dict[str, str], cfg: ServingConfig, approved: bool) -> dict[str, Any]:
    """Arguments of ``SageMakerRegisterModelVersionOperator`` for this version (validated)."""
    refuse_smoke(mv)
    m = mv.metrics
    metadata = {"streamguard_model": mv.model, "streamguard_version": str(mv.version),
                "data_content_hash": str(mv.lineage.get("data_content_hash")),
                "code_version": str(mv.lineage.get("code_version")), "training_job": str(mv.lineage.get("job_name")),
                **{k: f"{m[k]:.4f}" for k in ("accuracy", "f1", "fpr", "pairwise_accuracy")
                   if isinstance(m.get(k), (int, float))}}
    extras: dict[str, Any] = {
        "InferenceSpecification": {"Containers": [_container(mv, staged, cfg)],
                                   "SupportedContentTypes": [JSON, JSON_LINES],
                                   "SupportedResponseMIMETypes": [JSON, JSON_LINES],
                                   "SupportedRealtimeInferenceInstanceTypes": [cfg.instance_type]},
        "CustomerMetadataProperties": metadata,
    }
    if staged.get("card_url"):
        extras["ModelMetrics"] = {"ModelQuality": {"Statistics": {"ContentType": JSON, "S3Uri": staged["card_url"]}}}
    args = {"image_uri": cfg.image, "model_url": staged["model_data_url"], "package_group_name": mv.model,
            "package_desc": f"{mv.model} v{mv.version} from the StreamGuard registry",
            "model_approval": "Approved" if approved else "PendingManualApproval", "extras": extras}
    validate_request({"ModelPackageGroupName": mv.model, "ModelPackageDescription": args["package_desc"],
                      "ModelApprovalStatus": args["model_approval"], **extras}, "CreateModelPackage")
    return args


def exported_package(client: Any, model: str, version: int) -> str | None:
    """The ARN of the package this version was already exported as, if any (keeps export idempotent)."""
    if not _exists(client.describe_model_package_group, ModelPackageGroupName=model):
        return None
    for page in client.get_paginator("list_model_packages").paginate(ModelPackageGroupName=model):
        for summary in page["ModelPackageSummaryList"]:
            described = client.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            props = described.get("CustomerMetadataProperties") or {}
            if props.get("streamguard_model") == model and props.get("streamguard_version") == str(version):
                return summary["ModelPackageArn"]
    return None
