"""The one training entrypoint: ``python -m streamguard_ml.train`` / ``streamguard-ml train``.

It honours SageMaker's training-container contract, so the same code runs in a
SageMaker job and in the local backend (which builds an ``/opt/ml``-like tree and
runs exactly this module):

* hyperparameters arrive as CLI arguments (``--epochs 3 --model-type gnn``);
* data comes from ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION`` (processed
  split directories); an optional ``SM_CHANNEL_INIT`` holds a model to fine-tune;
* the model is written to ``SM_MODEL_DIR`` (SageMaker tars it to ``model.tar.gz``);
* checkpoints go to ``/opt/ml/checkpoints`` when it exists (or ``--checkpoint-dir``),
  one per epoch, and a restarted job resumes from the last one;
* every epoch prints ``Train Loss=...; Train Acc=...; Val Acc=...; Val F1=...; Val AUC=...;``,
  the lines the SageMaker metric definitions parse.

Defaults for every hyperparameter come from :class:`streamguard_ml.config.PipelineConfig`
(the one typed place), so the DAG, the CLI and a bare ``python -m streamguard_ml.train``
train the same model.  After the last epoch the kept model's validation scores fit
its calibration and choose its decision threshold (``calibration.py``,
``thresholds.py``); both are written into the model's config.

``--model-type fusion`` fits the fusion detector instead (``fusion.py``): it reads the
trained GNN and transformer from the ``gnn`` and ``transformer`` channels.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

log = logging.getLogger("streamguard_ml.train")

SAGEMAKER_CHECKPOINTS = "/opt/ml/checkpoints"
#: The epoch line and the regexes SageMaker's metric definitions use to read it.
EPOCH_LINE = ("Epoch {epoch}/{epochs}: Train Loss={loss:.4f}; Train Acc={train_acc:.4f}; Val Acc={val_acc:.4f}; "
              "Val F1={val_f1:.4f}; Val AUC={val_auc:.4f}; Val Loss={val_loss:.4f};")
METRIC_REGEXES = {
    "train:loss": r"Train Loss=([0-9.eE+-]+);",
    "train:accuracy": r"Train Acc=([0-9.eE+-]+);",
    "validation:accuracy": r"Val Acc=([0-9.eE+-]+);",
    "validation:f1": r"Val F1=([0-9.eE+-]+);",
    "validation:auc": r"Val AUC=([0-9.eE+-]+);",
    "validation:loss": r"Val Loss=([0-9.eE+-]+);",
}
MODEL_TYPE_CHOICES = ("gnn", "transformer", "fusion")


def build_parser() -> argparse.ArgumentParser:
    """The entrypoint's arguments; ``None`` defaults are filled per model type by :func:`apply_defaults`."""
    from .config import CALIBRATION_METHODS, SELECTION_METRICS, THRESHOLD_POLICIES

    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m streamguard_ml.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-type", choices=MODEL_TYPE_CHOICES, required=True)
    p.add_argument("--epochs", type=int, default=None, help="default: gnn_epochs / transformer_epochs of the config")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None,
                   help="default: learning_rate_gnn / learning_rate_transformer of the config")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--patience", type=int, default=None, help="epochs without a better validation score")
    p.add_argument("--min-epochs", type=int, default=None, help="never stop before this many epochs")
    p.add_argument("--selection-metric", choices=SELECTION_METRICS, default=None,
                   help="what early stopping and the kept epoch follow on validation")
    p.add_argument("--pair-batches", choices=("on", "off"), default=None,
                   help="keep each vulnerable function and its fix in one batch")
    p.add_argument("--pair-loss-weight", type=float, default=None, help="margin ranking term (0: off)")
    p.add_argument("--pair-margin", type=float, default=None)
    p.add_argument("--threshold-policy", choices=THRESHOLD_POLICIES, default=None)
    p.add_argument("--max-fpr", type=float, default=None, help="validation FPR budget of the max_fpr policy")
    p.add_argument("--calibration", choices=CALIBRATION_METHODS, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--base-model", default=None, help="transformer: HF name, local dir or s3:// URI")
    p.add_argument("--max-length", type=int, default=None, help="transformer window in tokens")
    p.add_argument("--window-stride", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None, help="gnn hidden size")
    p.add_argument("--layers", type=int, default=None, help="gnn GAT layers")
    p.add_argument("--heads", type=int, default=None, help="gnn attention heads")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--token-dropout", type=float, default=None,
                   help="gnn: share of nodes whose sub-tokens are hidden per training step")
    p.add_argument("--model-dir", default=env("SM_MODEL_DIR"), help="SM_MODEL_DIR")
    p.add_argument("--train", default=env("SM_CHANNEL_TRAIN"), help="SM_CHANNEL_TRAIN")
    p.add_argument("--validation", default=env("SM_CHANNEL_VALIDATION"), help="SM_CHANNEL_VALIDATION")
    p.add_argument("--init-model", default=env("SM_CHANNEL_INIT"),
                   help="fine-tune from this model (directory or one holding model.tar.gz); SM_CHANNEL_INIT")
    p.add_argument("--gnn-model", default=env("SM_CHANNEL_GNN"),
                   help="fusion: the trained GNN (directory or one holding model.tar.gz); SM_CHANNEL_GNN")
    p.add_argument("--transformer-model", default=env("SM_CHANNEL_TRANSFORMER"),
                   help="fusion: the trained transformer; SM_CHANNEL_TRANSFORMER")
    p.add_argument("--checkpoint-dir",
                   default=SAGEMAKER_CHECKPOINTS if os.path.isdir(SAGEMAKER_CHECKPOINTS) else None)
    p.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR"))
    return p


def apply_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every hyperparameter left unset from the typed config's defaults for this model type."""
    from .config import PipelineConfig

    defaults = PipelineConfig().hyperparameters(args.model_type)
    for name, value in defaults.items():
        attr = name.replace("-", "_")
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)
    return args


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """What defines the trained model (not where files are)."""
    paths = {"model_dir", "train", "validation", "init_model", "checkpoint_dir", "output_data_dir", "gnn_model",
             "transformer_model"}
    unused = set() if args.model_type == "transformer" else {"base_model", "max_length", "window_stride"}
    unused |= set() if args.model_type == "gnn" else {"hidden", "layers", "heads", "token_dropout"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in paths | unused}


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def require_dir(path: str | None, what: str, env: str) -> Path:
    """A channel directory that must exist (SageMaker mounts each channel as one)."""
    if not path:
        raise SystemExit(f"no {what} directory: pass --{what} or set {env}")
    if not Path(path).is_dir():
        raise SystemExit(f"{what} directory {path} does not exist")
    return Path(path)


def model_directory(path: str | None, what: str = "--init-model") -> Path | None:
    """A model directory from ``path``: the directory itself, or one holding (or being) ``model.tar.gz``, unpacked."""
    if not path:
        return None
    from .inference import extract_archive
    from .kinds import CONFIG_FILE
    from .packaging import ArchiveError

    p = Path(path)
    if (p / CONFIG_FILE).exists():
        return p
    archive = p / "model.tar.gz" if p.is_dir() else p
    if not archive.exists():
        raise SystemExit(f"{what} {path}: no model.tar.gz or {CONFIG_FILE} there")
    # An unpredictable folder (no other user can plant one first), deleted when the extraction scope ends.
    scratch = tempfile.TemporaryDirectory(prefix=f"sg-{what.strip('-')}-")
    (_SCOPES[-1] if _SCOPES else _UNSCOPED).callback(scratch.cleanup)
    try:
        return extract_archive(archive, Path(scratch.name) / "model")
    except ArchiveError as exc:
        scratch.cleanup()
        raise SystemExit(f"{what}: {exc}") from exc


#: Open extraction scopes (innermost last); model_directory outside any is cleaned up at exit.
_SCOPES: list[contextlib.ExitStack] = []
_UNSCOPED = contextlib.ExitStack()
atexit.register(_UNSCOPED.close)


@contextlib.contextmanager
def extraction_scope() -> Iterator[None]:
    """Model archives :func:`model_directory` unpacks inside the block are deleted when it ends."""
    with contextlib.ExitStack() as stack:
        _SCOPES.append(stack)
        try:
            yield
        finally:
            _SCOPES.remove(stack)


def _check_same_features(trained_on: dict[str, Any], data: dict[str, Any], model_type: str) -> None:
    """A model can only continue training on data featurised the way it was trained."""
    keys = ("base_model",) if model_type == "transformer" else ("graph_format", "vocabulary", "rules")
    differ = {k: (trained_on.get(k), data.get(k)) for k in keys if trained_on.get(k) != data.get(k)}
    if differ:
        raise SystemExit(f"cannot fine-tune: the starting model and the data differ in {differ}; "
                         "preprocess with the same settings or train from scratch")


def warmup_linear(optimizer: Any, warmup: int, total: int) -> Any:
    """Linear warm-up then linear decay to zero (as in BERT fine-tuning)."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Checkpointer:
    """One checkpoint per epoch: model, optimizer, scheduler, RNG states and history.

    Everything goes into ONE safetensors file (the JSON state rides in its
    metadata) replaced atomically, so an interruption at any moment leaves either
    the previous epoch's checkpoint or this one — never a mix.  Restoring the RNG
    states makes a resumed run continue exactly as the uninterrupted run would.
    """

    FILE = "checkpoint.safetensors"

    def __init__(self, directory: str | None, model_type: str):
        self.dir = Path(directory) / model_type if directory else None

    def save(self, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], best: dict | None) -> None:
        if self.dir is None:
            return
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        opt = optimizer.state_dict()
        for idx, st in opt["state"].items():
            for name, value in st.items():
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().reshape(value.shape).contiguous()
        if best is not None:
            tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()})
        rng_meta, rng_tensors = _rng_state()
        tensors.update(rng_tensors)
        meta = {**state, "param_groups": opt["param_groups"], "scheduler": _jsonable(scheduler.state_dict()),
                "rng": rng_meta}
        tmp = self.dir / f"{self.FILE}.tmp"
        save_file(_dedupe(tensors), str(tmp), metadata={"state": json.dumps(meta, default=str)})
        os.replace(tmp, self.dir / self.FILE)

    def load(self, model: Any, optimizer: Any, scheduler: Any) -> tuple[dict[str, Any], dict | None] | None:
        if self.dir is None or not (self.dir / self.FILE).exists():
            return None
        from safetensors import safe_open

        with safe_open(str(self.dir / self.FILE), framework="pt") as fh:
            meta = json.loads(fh.metadata()["state"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
        scheduler.load_state_dict(meta.pop("scheduler"))
        _restore_rng(meta.pop("rng"), tensors)
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        return meta, best


def _rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """Python, NumPy and torch (CPU + CUDA) generator states: JSON part and tensor part."""
    import torch

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": np_state}, tensors


def _restore_rng(meta: dict[str, Any], tensors: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = meta["numpy"]
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _dedupe(tensors: dict[str, Any]) -> dict[str, Any]:
    """safetensors refuses shared storage; clone tensors that alias another."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: None))


def train_model(args: argparse.Namespace) -> dict[str, Any]:
    """Train, early-stop on the validation score, calibrate, choose the threshold, write the model directory."""
    with extraction_scope():  # what --init-model (or a fusion member) unpacked is deleted once training ends
        return _train_model(args)


def _train_model(args: argparse.Namespace) -> dict[str, Any]:
    from .dataset import load_split
    from .distributed import parameter_checksum, setup
    from .kinds import kind_for

    args = apply_defaults(args)
    if args.model_type == "fusion":
        from .fusion import train_fusion

        return train_fusion(args)
    seed_everything(args.seed)
    dist = setup()
    train_dir = require_dir(args.train, "train", "SM_CHANNEL_TRAIN")
    val_dir = require_dir(args.validation, "validation", "SM_CHANNEL_VALIDATION")
    model_dir = output_dir(args)
    train, val = load_split(train_dir), load_split(val_dir)
    kind = kind_for(args.model_type, **({"max_length": args.max_length, "stride": args.window_stride}
                                        if args.model_type == "transformer" else {}))
    hp = hyperparameters(args)
    init = model_directory(args.init_model)
    if init is not None:
        model, init_config = kind.load(init)
        _check_same_features(init_config.get("dataset", {}), train.meta, args.model_type)
        log.info("fine-tuning from %s", args.init_model)
    else:
        model = kind.build(train.meta, hp)
    device = dist.device
    model.to(device)
    log.info("training %s on %d samples (validation %d), %d parameters, device %s", args.model_type,
             len(train), len(val), sum(p.numel() for p in model.parameters()), device)
    history = fit(kind, model, train, val, args, device, dist)
    dist.close()
    if dist.enabled:
        log.info("rank %d/%d done: parameter checksum %.10e", dist.rank, dist.world_size, parameter_checksum(model))
    if not dist.is_main:
        return {"model_type": args.model_type, "rank": dist.rank, "history": history}
    kind.fit_extras(model, train, val, args.batch_size)
    from .inference import score_split

    decision = decision_rule(args, val.labels, score_split(kind, model, val, args.batch_size).logit)
    kind.save(model.cpu(), model_dir, train.meta, hp, {**decision["extras"], "trained_on": _trained_on(train, val)})
    return write_summary(model_dir, args, hp, history, decision, train, val)


def _trained_on(train: Any, val: Any) -> dict[str, Any]:
    """The code the model learned from and selected its epoch and threshold on (``records.fingerprints``)."""
    from .records import fingerprints

    return {"fingerprints": fingerprints(train.records["code"], val.records["code"]),
            "train_samples": len(train), "val_samples": len(val)}


def output_dir(args: argparse.Namespace) -> Path:
    """``SM_MODEL_DIR`` (created): where the trained model is written."""
    if not args.model_dir:
        raise SystemExit("no model directory: pass --model-dir or set SM_MODEL_DIR")
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    return model_dir


def decision_rule(args: argparse.Namespace, labels: Any, logit: Any) -> dict[str, Any]:
    """Calibration and operating point fitted on validation log-odds, and the validation metrics they give.

    ``extras`` is what the model's config stores; the metrics (at the chosen threshold and
    at 0.5) go into ``training.json``.
    """
    from . import calibration, thresholds
    from .evaluate import classification_metrics

    calibrator = calibration.fit(args.calibration, labels, logit)
    prob = calibrator.apply(logit)
    point = thresholds.choose(labels, prob, args.threshold_policy, args.max_fpr)
    raw = calibration.sigmoid(np.asarray(logit, dtype=np.float64))
    return {"extras": {"calibration": calibrator.to_dict(), "operating_point": point.to_dict()},
            "validation": classification_metrics(labels, prob, point.threshold),
            "validation_at_0.5": classification_metrics(labels, prob, 0.5),
            "validation_calibration": calibration.report(labels, raw, prob, calibrator.method)}


def write_summary(model_dir: Path, args: argparse.Namespace, hp: dict[str, Any], history: list[dict],
                  decision: dict[str, Any], train: Any, val: Any, **more: Any) -> dict[str, Any]:
    """``training.json`` (what the registry and the model card read) and the closing log line."""
    summary = {"model_type": args.model_type, "hyperparameters": hp, "history": history,
               "train_samples": len(train) if train is not None else 0, "val_samples": len(val),
               "dataset": (train if train is not None else val).meta, "fine_tuned_from": getattr(args, "init_model", None),
               **{k: v for k, v in decision.items() if k != "extras"}, **decision["extras"], **more}
    (model_dir / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    vm, point = summary["validation"], summary["operating_point"]
    print(f"Training complete: Val Acc={vm['accuracy']:.4f}; Val F1={vm['f1']:.4f}; Val FPR={vm['fpr']:.4f}; "
          f"threshold={point['threshold']:.4f} ({point['policy']});", flush=True)
    return summary


def fit(kind: Any, model: Any, train: Any, val: Any, args: argparse.Namespace, device: Any,
        dist: Any = None) -> list[dict]:
    """AdamW with warm-up/decay, clipping, accumulation, bf16 on GPU, early stopping, per-epoch checkpoints.

    The loss is cross-entropy plus, with ``pair_loss_weight`` > 0, the margin ranking
    term of :mod:`streamguard_ml.pairs` over the pairs in each batch (``pair_batches``
    keeps a pair's members together).  The kept epoch is the best by
    ``selection_metric`` on validation (AUC by default: unlike F1 at a fixed 0.5 it
    does not jump with a few borderline scores of a small split); training stops
    after ``patience`` epochs without improvement, never before ``min_epochs``.

    With ``dist`` (:class:`streamguard_ml.distributed.Distributed`) each process trains on its
    share of the batches under DDP; rank 0 prints, checkpoints and decides.
    """
    import torch

    from .distributed import Distributed
    from .pairs import margin_ranking_term

    dist = dist or Distributed()
    pairs = args.pair_batches == "on" or args.pair_loss_weight > 0
    steps_per_epoch = math.ceil(math.ceil(len(train) / args.batch_size) / dist.world_size / args.grad_accum)
    total = max(1, steps_per_epoch * args.epochs)
    optimizer = adamw(model, args.learning_rate, args.weight_decay)
    scheduler = warmup_linear(optimizer, int(args.warmup_ratio * total), total)
    ckpt = Checkpointer(args.checkpoint_dir, args.model_type)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_score": None, "best_epoch": 0, "stale": 0}
    best: dict | None = None
    resumed = ckpt.load(model, optimizer, scheduler)
    if resumed:
        state, best = resumed
        log.info("resumed from checkpoint after epoch %d", state["epoch"])
    net = dist.wrap(model)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()  # older GPUs (T4, V100) stay in fp32
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else _null()
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        if state["stale"] >= args.patience and state["epoch"] >= args.min_epochs:
            break
        net.train()
        loss_sum, correct, seen, started, pending = 0.0, 0, 0, time.perf_counter(), False
        optimizer.zero_grad()
        batches = kind.batches(train, args.batch_size, shuffle=True, seed=args.seed + epoch, pairs=pairs)
        for step, batch in enumerate(dist.epoch(net, batches)):
            batch.inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.inputs.items()}
            labels = batch.labels.to(device)
            with autocast:
                logits, _ = kind.forward(net, batch)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                if args.pair_loss_weight > 0 and batch.pairs is not None:
                    loss = loss + args.pair_loss_weight * margin_ranking_term(
                        logits.float(), batch.pairs.to(device), args.pair_margin)
            (loss / args.grad_accum).backward()
            pending = (step + 1) % args.grad_accum != 0
            if not pending:
                optimizer_step(model, optimizer, scheduler, args.max_grad_norm)
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(-1) == labels).sum())
            seen += len(labels)
        if pending:  # the epoch's last, incomplete accumulation group still counts
            optimizer_step(model, optimizer, scheduler, args.max_grad_norm)
        loss_sum, correct, seen = dist.sum(loss_sum, correct, seen)
        vm = dist.from_main(validation_metrics(kind, model, val, args.batch_size))
        row = {"epoch": epoch, "loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
               "val_acc": vm["accuracy"], "val_f1": vm["f1"], "val_auc": vm["roc_auc"], "val_loss": vm["log_loss"],
               "seconds": round(time.perf_counter() - started, 2),
               "samples_per_s": round(seen / max(1e-9, time.perf_counter() - started), 2)}
        state["history"].append(row)
        if dist.is_main:
            print(EPOCH_LINE.format(epochs=args.epochs, **{**row, "val_auc": _nan(row["val_auc"])}), flush=True)
        score = selection_score(vm, args.selection_metric)
        if state.get("best_score") is None or score > state["best_score"] + 1e-9:
            state.update(best_score=score, best_epoch=epoch, stale=0)
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        if dist.is_main:
            ckpt.save(model, optimizer, scheduler, state, best)
    if best is not None:
        model.load_state_dict(best)
        log.info("kept epoch %d (validation %s %.4f)", state["best_epoch"], args.selection_metric,
                 abs(state["best_score"]))
    return state["history"]


def validation_metrics(kind: Any, model: Any, val: Any, batch_size: int) -> dict[str, Any]:
    """Raw-score metrics on the validation split (threshold 0.5) plus its log-loss."""
    from sklearn.metrics import log_loss

    from .evaluate import classification_metrics
    from .inference import score_split

    scores = score_split(kind, model, val, batch_size)
    vm = classification_metrics(val.labels, scores.prob)
    vm["log_loss"] = float(log_loss(val.labels, np.clip(scores.prob, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return vm


def selection_score(vm: dict[str, Any], metric: str) -> float:
    """Higher is better; AUC falls back to −loss when the validation split has one class only."""
    if metric == "auc" and vm.get("roc_auc") is not None:
        return float(vm["roc_auc"])
    if metric == "f1":
        return float(vm["f1"])
    return -float(vm["log_loss"])


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def adamw(model: Any, learning_rate: float, weight_decay: float) -> Any:
    """AdamW with the fused kernel: one pass over all parameters per step.

    On CPU the default per-tensor implementation costs seconds per step for a
    22 M-parameter encoder, more than the forward and backward of a short batch.
    """
    import torch

    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=True)


def optimizer_step(model: Any, optimizer: Any, scheduler: Any, max_grad_norm: float) -> None:
    """Clip, step the optimizer and the learning-rate schedule, clear the gradients."""
    import torch

    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, foreach=True)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


#: Set by the local backend: the process this training belongs to (an Airflow task, the CLI).
PARENT_PID_ENV = "STREAMGUARD_PARENT_PID"


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """Stop training within ``poll_seconds`` once the process that started it is gone.

    A task killed with SIGKILL cannot stop its children, and an orphaned training would
    go on writing checkpoints into the store beside the retry's.  The local backend
    names its pid in :data:`PARENT_PID_ENV`; on SageMaker the variable is unset and
    nothing is watched.  Polling ``os.getppid`` works on Linux and macOS alike.  The
    variable is removed so that processes this one starts (torchrun workers) do not
    watch a pid that is not their parent.
    """
    import threading

    expected = os.environ.pop(PARENT_PID_ENV, None)
    if not expected or not expected.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(poll_seconds)
        log.error("the process that started this training (pid %s) is gone: stopping", expected)
        os._exit(1)  # no cleanup: a checkpoint is only ever visible once complete

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    exit_with_parent()
    from .distributed import launch

    launched = launch(list(sys.argv[1:] if argv is None else argv))  # several GPUs / hosts: DDP
    if launched is not None:
        return launched
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log.info("ignoring unknown arguments %s", unknown)
    train_model(apply_defaults(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
