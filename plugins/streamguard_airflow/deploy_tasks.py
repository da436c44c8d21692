"""Optional shipping of a model to SageMaker after promotion (``deploy_endpoint`` and
``export_model_registry`` Params): plan tasks that stage artifacts and build the
requests in the library, the provider's operators that create the resources, and
a record task that writes what was created into the registry's audit log.

A step that is switched off, or has nothing left to do (a retry after success),
is skipped, never repeated: plans drop what already exists on SageMaker.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointOperator,
    SageMakerRegisterModelVersionOperator,
)
from airflow.providers.amazon.aws.utils.sagemaker import ApprovalStatus
from airflow.sdk import get_current_context, task, task_group

from . import runtime

AWS_CONN = "aws_default"


class ModelPackageOperator(SageMakerRegisterModelVersionOperator):
    """The provider's operator with ``extras`` templated too, so the plan can come from XCom."""

    template_fields = (*SageMakerRegisterModelVersionOperator.template_fields, "extras")

    def execute(self, context: Any) -> str:
        if isinstance(self.model_approval, str):
            self.model_approval = ApprovalStatus(self.model_approval)
        return super().execute(context)


def _version(promoted: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from streamguard_ml.config import ServingConfig
    from streamguard_ml.registry import Registry

    context = get_current_context()
    cfg = ServingConfig.from_mapping(context["params"].get("serving"))
    registry = Registry(runtime.store(context))
    mv = registry.get(promoted["model"], int(promoted["version"]))
    return cfg, registry, mv, SageMakerHook(aws_conn_id=AWS_CONN).conn


def _skip(reason: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)


@task
def plan_endpoint(promoted: dict[str, Any]) -> dict[str, Any]:
    """The model / endpoint-config / endpoint requests still to be made for the new champion."""
    from streamguard_ml.deployment import endpoint_requests, pending_endpoint, stage

    if not get_current_context()["params"].get("deploy_endpoint"):
        _skip("deploy_endpoint is off")
    if not promoted.get("promoted"):
        _skip(f"{promoted['model']} v{promoted['version']} was not promoted: the endpoint keeps the champion")
    cfg, registry, mv, client = _version(promoted)
    requests = pending_endpoint(client, endpoint_requests(mv, stage(registry.store, mv, cfg), cfg))
    if requests is None:
        _skip(f"{mv.model} v{mv.version} is already in service")
    return requests


@task(multiple_outputs=True)
def plan_export(promoted: dict[str, Any]) -> dict[str, Any]:
    """The model package for SageMaker Model Registry (Approved when this version is the champion)."""
    from streamguard_ml.deployment import exported_package, model_package, stage

    if not get_current_context()["params"].get("export_model_registry"):
        _skip("export_model_registry is off")
    cfg, registry, mv, client = _version(promoted)
    if mv.smoke:
        _skip(f"{mv.model} v{mv.version} is a smoke run's: smoke versions are never exported or deployed")
    arn = exported_package(client, mv.model, mv.version)
    if arn:
        _skip(f"{mv.model} v{mv.version} was already exported as {arn}")
    staged = stage(registry.store, mv, cfg, f"{registry.card_prefix(mv.model, mv.version)}/model_card.json")
    return model_package(mv, staged, cfg, approved="champion" in mv.aliases)


@task
def record(promoted: dict[str, Any], what: str, result: Any) -> str:
    """Put the SageMaker resource into the version's audit trail."""
    from streamguard_ml.registry import Registry

    registry = Registry(runtime.store(get_current_context()))
    model, version = promoted["model"], int(promoted["version"])
    if what == "endpoint":
        note = f"serving on SageMaker endpoint {result['Endpoint']['EndpointName']} ({result['Endpoint']['EndpointArn']})"
    else:
        note = f"exported to SageMaker Model Registry as {result}"
    registry.set_status(model, version, registry.get(model, version).status, note)
    return note


@task_group
def sagemaker_shipping(promoted: Any) -> None:
    """Optional: deploy the champion to an endpoint; export the version to SageMaker Model Registry."""
    endpoint = SageMakerEndpointOperator(
        task_id="deploy_endpoint", config=plan_endpoint(promoted), aws_conn_id=AWS_CONN,
        wait_for_completion=True, check_interval=30)
    record.override(task_id="record_endpoint")(promoted, "endpoint", endpoint.output)
    package = plan_export(promoted)
    exported = ModelPackageOperator(
        task_id="export_model_package", aws_conn_id=AWS_CONN, image_uri=package["image_uri"],
        model_url=package["model_url"], package_group_name=package["package_group_name"],
        package_desc=package["package_desc"], model_approval=package["model_approval"], extras=package["extras"])
    record.override(task_id="record_export")(promoted, "export", exported.output)
