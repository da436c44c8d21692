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
* every epoch prints ``Train Loss=...; Train Acc=...; Val Acc=...; Val F1=...;``,
  the lines the SageMaker metric definitions parse.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("streamguard_ml.train")

SAGEMAKER_CHECKPOINTS = "/opt/ml/checkpoints"
#: The epoch line and the regexes SageMaker's metric definitions use to read it.
EPOCH_LINE = "Epoch {epoch}/{epochs}: Train Loss={loss:.4f}; Train Acc={train_acc:.4f}; Val Acc={val_acc:.4f}; Val F1={val_f1:.4f};"
METRIC_REGEXES = {
    "train:loss": r"Train Loss=([0-9.eE+-]+);",
    "train:accuracy": r"Train Acc=([0-9.eE+-]+);",
    "validation:accuracy": r"Val Acc=([0-9.eE+-]+);",
    "validation:f1": r"Val F1=([0-9.eE+-]+);",
}


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="streamguard-ml train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-type", choices=["gnn", "transformer"], required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=None, help="default: 2e-3 (gnn), 5e-5 (transformer)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--patience", type=int, default=3, help="early stopping on validation F1")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--base-model", default=None, help="transformer: HF name, local dir or s3:// URI")
    p.add_argument("--max-length", type=int, default=256, help="transformer window in tokens")
    p.add_argument("--window-stride", type=int, default=192)
    p.add_argument("--hidden", type=int, default=128, help="gnn hidden size")
    p.add_argument("--layers", type=int, default=3, help="gnn GAT layers")
    p.add_argument("--heads", type=int, default=4, help="gnn attention heads")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--model-dir", default=env("SM_MODEL_DIR"), help="SM_MODEL_DIR")
    p.add_argument("--train", default=env("SM_CHANNEL_TRAIN"), help="SM_CHANNEL_TRAIN")
    p.add_argument("--validation", default=env("SM_CHANNEL_VALIDATION"), help="SM_CHANNEL_VALIDATION")
    p.add_argument("--init-model", default=env("SM_CHANNEL_INIT"),
                   help="fine-tune from this model (directory or one holding model.tar.gz); SM_CHANNEL_INIT")
    p.add_argument("--checkpoint-dir",
                   default=SAGEMAKER_CHECKPOINTS if os.path.isdir(SAGEMAKER_CHECKPOINTS) else None)
    p.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR"))
    return p


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """What defines the trained model (not where files are)."""
    paths = {"model_dir", "train", "validation", "init_model", "checkpoint_dir", "output_data_dir"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in paths}


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _require(path: str | None, what: str, env: str) -> Path:
    if not path:
        raise SystemExit(f"no {what} directory: pass --{what} or set {env}")
    if not Path(path).is_dir():
        raise SystemExit(f"{what} directory {path} does not exist")
    return Path(path)


def _init_dir(path: str | None) -> Path | None:
    """A model directory to start from, unpacking ``model.tar.gz`` if that is what the channel holds."""
    if not path:
        return None
    from .inference import extract_archive
    from .kinds import CONFIG_FILE

    p = Path(path)
    if (p / CONFIG_FILE).exists():
        return p
    archive = p / "model.tar.gz" if p.is_dir() else p
    if not archive.exists():
        raise SystemExit(f"--init-model {path}: no model.tar.gz or {CONFIG_FILE} there")
    return extract_archive(archive, Path(os.environ.get("TMPDIR", "/tmp")) / f"sg-init-{os.getpid()}")


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
    """Train, early-stop on validation F1, calibrate, and write the model directory."""
    from .dataset import load_split
    from .distributed import parameter_checksum, setup
    from .evaluate import classification_metrics
    from .inference import score_split
    from .kinds import kind_for

    seed_everything(args.seed)
    dist = setup()
    train_dir = _require(args.train, "train", "SM_CHANNEL_TRAIN")
    val_dir = _require(args.validation, "validation", "SM_CHANNEL_VALIDATION")
    if not args.model_dir:
        raise SystemExit("no model directory: pass --model-dir or set SM_MODEL_DIR")
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    train, val = load_split(train_dir), load_split(val_dir)
    args.learning_rate = args.learning_rate or (2e-3 if args.model_type == "gnn" else 5e-5)
    args.dropout = args.dropout if args.dropout is not None else (0.2 if args.model_type == "gnn" else 0.1)
    kind = kind_for(args.model_type, **({"max_length": args.max_length, "stride": args.window_stride}
                                        if args.model_type == "transformer" else {}))
    hp = hyperparameters(args)
    init = _init_dir(args.init_model)
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
    val_scores = score_split(kind, model, val, args.batch_size)
    val_metrics = classification_metrics(val.labels, val_scores.prob)
    kind.save(model.cpu(), model_dir, train.meta, hp)
    summary = {"model_type": args.model_type, "hyperparameters": hp, "history": history,
               "validation": val_metrics, "train_samples": len(train), "val_samples": len(val),
               "dataset": train.meta, "fine_tuned_from": args.init_model}
    (model_dir / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    print(f"Training complete: Val Acc={val_metrics['accuracy']:.4f}; Val F1={val_metrics['f1']:.4f};", flush=True)
    return summary


def fit(kind: Any, model: Any, train: Any, val: Any, args: argparse.Namespace, device: Any,
        dist: Any = None) -> list[dict]:
    """AdamW with warm-up/decay, clipping, accumulation, bf16 on GPU, early stopping, per-epoch checkpoints.

    With ``dist`` (:class:`streamguard_ml.distributed.Distributed`) each process trains on its
    share of the batches under DDP; rank 0 prints, checkpoints and decides.
    """
    import torch

    from .distributed import Distributed
    from .evaluate import classification_metrics
    from .inference import score_split

    dist = dist or Distributed()
    steps_per_epoch = math.ceil(math.ceil(len(train) / args.batch_size) / dist.world_size / args.grad_accum)
    total = max(1, steps_per_epoch * args.epochs)
    optimizer = adamw(model, args.learning_rate, args.weight_decay)
    scheduler = warmup_linear(optimizer, int(args.warmup_ratio * total), total)
    ckpt = Checkpointer(args.checkpoint_dir, args.model_type)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "stale": 0}
    best: dict | None = None
    resumed = ckpt.load(model, optimizer, scheduler)
    if resumed:
        state, best = resumed
        log.info("resumed from checkpoint after epoch %d", state["epoch"])
    net = dist.wrap(model)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()  # older GPUs (T4, V100) stay in fp32
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else _null()
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        if state["stale"] >= args.patience:
            break
        net.train()
        loss_sum, correct, seen, started, pending = 0.0, 0, 0, time.perf_counter(), False
        optimizer.zero_grad()
        for step, batch in enumerate(dist.epoch(net, kind.batches(train, args.batch_size, shuffle=True,
                                                                   seed=args.seed + epoch))):
            batch.inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.inputs.items()}
            labels = batch.labels.to(device)
            with autocast:
                logits, _ = kind.forward(net, batch)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
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
        val_scores = score_split(kind, model, val, args.batch_size)
        vm = dist.from_main(classification_metrics(val.labels, val_scores.prob))
        row = {"epoch": epoch, "loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
               "val_acc": vm["accuracy"], "val_f1": vm["f1"], "seconds": round(time.perf_counter() - started, 2),
               "samples_per_s": round(seen / max(1e-9, time.perf_counter() - started), 2)}
        state["history"].append(row)
        if dist.is_main:
            print(EPOCH_LINE.format(epochs=args.epochs, **row), flush=True)
        if vm["f1"] > state["best_f1"]:
            state.update(best_f1=vm["f1"], best_epoch=epoch, stale=0)
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        if dist.is_main:
            ckpt.save(model, optimizer, scheduler, state, best)
    if best is not None:
        model.load_state_dict(best)
        log.info("restored best epoch %d (val F1 %.4f)", state["best_epoch"], state["best_f1"])
    return state["history"]


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


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    from .distributed import launch

    launched = launch(list(sys.argv[1:] if argv is None else argv))  # several GPUs / hosts: DDP
    if launched is not None:
        return launched
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log.info("ignoring unknown arguments %s", unknown)
    train_model(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
