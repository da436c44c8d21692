"""Transformer training throughput: dynamic padding + length bucketing vs fixed padding to 512.

One run, one model, the same samples: a random set of functions is trained on
(forward, backward, clipping, fused AdamW step — the step of ``streamguard_ml.train``)
in two ways (three with ``--unbucketed``), their steps interleaved so that load
from other processes slows every mode alike:

* ``dynamic+bucketing`` — what training does: batches of similar length
  (``bucketed_batches``), each padded only to its longest window;
* ``fixed-512`` — the same samples in random batches, every window padded to 512
  tokens (what the seed did; it also truncated, here the windows are kept so both
  modes do the same work);
* ``dynamic`` (with ``--unbucketed``) — the random batches padded only to their
  longest window, to show what bucketing adds.

The padding of a whole epoch is also counted exactly (token slots per mode).

Then inference (no gradients, bucketed, batch 32) is timed.  The data is
the SVEN training pairs when ``/work/shared/datasets/sven-train`` exists, else
built-in synthetic functions (``--source`` picks another).  The last line is::

    RESULT train_speedup=X infer_samples_per_s=Y

where ``train_speedup`` is dynamic+bucketing samples/s over fixed-512 samples/s.

Usage: ``.venv/bin/python benchmarks/train_transformer.py [--batches 8] [--source KIND:PATH]``
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SVEN = Path("/work/shared/datasets/sven-train")


def parse_args() -> argparse.Namespace:
    from streamguard_ml.config import EMBEDDED_BASE_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=f"sven:{SVEN}" if SVEN.is_dir() else "synthetic:600",
                   help="KIND:PATH of the functions (default: SVEN pairs if present, else synthetic:600)")
    p.add_argument("--base-model", default=EMBEDDED_BASE_MODEL)
    p.add_argument("--max-length", type=int, default=512, help="window (and fixed padding) length")
    p.add_argument("--stride", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=8, help="timed training steps per mode")
    p.add_argument("--unbucketed", action="store_true", help="also time dynamic padding without bucketing")
    p.add_argument("--infer-samples", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args()


def load_functions(source: str) -> tuple[list[str], list[int]]:
    """Code and labels of every record the source yields (rejected records are counted, not used)."""
    from streamguard_ml.records import Rejected
    from streamguard_ml.sources import read_source

    codes, labels, rejected = [], [], 0
    for item in read_source(source):
        if isinstance(item, Rejected):
            rejected += 1
            continue
        codes.append(item["code"])
        labels.append(int(item.get("label", item.get("vulnerable", 0))))
    if not codes:
        raise SystemExit(f"{source} yielded no functions: pass --source KIND:PATH with data")
    print(f"data: {source}: {len(codes)} functions ({rejected} rejected)")
    return codes, labels


def fixed_padding(inputs: dict[str, Any], width: int, pad_id: int) -> dict[str, Any]:
    """The seed's batches: every window padded to ``width`` tokens."""
    import torch.nn.functional as F

    extra = width - inputs["input_ids"].shape[1]
    return {**inputs, "input_ids": F.pad(inputs["input_ids"], (0, extra), value=pad_id),
            "attention_mask": F.pad(inputs["attention_mask"], (0, extra), value=0)}


def to_device(inputs: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}


def time_training(kind: Any, model: Any, modes: dict[str, list[Any]], device: Any) -> dict[str, float]:
    """Samples/s of real training steps per mode.

    The modes' steps are interleaved (round k runs batch k of every mode, in a
    rotating order), so load from other processes on a shared machine slows all
    modes alike instead of whichever happened to run at the time.
    """
    import torch

    from streamguard_ml.train import adamw, optimizer_step, warmup_linear

    rounds = max(len(b) for b in modes.values())
    optimizer = adamw(model, 5e-5, 0.01)
    scheduler = warmup_linear(optimizer, 0, (rounds + 1) * len(modes))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    model.train()

    def step(batch: Any) -> float:
        started = time.perf_counter()
        with autocast:
            logits, _ = kind.forward(model, batch)
            loss = torch.nn.functional.cross_entropy(logits.float(), batch.labels.to(device))
        loss.backward()
        optimizer_step(model, optimizer, scheduler, 1.0)
        _sync(device)
        return time.perf_counter() - started

    for batches in modes.values():  # untimed warm-up
        step(batches[0])
    names = list(modes)
    seconds = dict.fromkeys(names, 0.0)
    for k in range(rounds):
        for name in names[k % len(names):] + names[: k % len(names)]:
            if k < len(modes[name]):
                seconds[name] += step(modes[name][k])
    rates = {}
    for name, batches in modes.items():
        samples = sum(len(b.index) for b in batches)
        real = sum(int(b.inputs["attention_mask"].sum()) for b in batches)
        slots = sum(b.inputs["input_ids"].numel() for b in batches)
        windows = sum(b.inputs["input_ids"].shape[0] for b in batches)
        rates[name] = samples / seconds[name]
        print(f"train {name:<18} {samples} samples, {windows} windows, {len(batches)} steps, {slots:,} token "
              f"slots ({real / slots:.0%} real): {seconds[name]:.1f} s -> {rates[name]:.2f} samples/s")
    return rates


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    import torch

    from streamguard_ml.inference import featurize, score_split
    from streamguard_ml.kinds import Batch, TransformerKind
    from streamguard_ml.tokens import windows

    args = parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    codes, labels = load_functions(args.source)
    kind = TransformerKind(max_length=args.max_length, stride=args.stride)
    model = kind.build({"base_model": args.base_model}, {"base_model": args.base_model}).to(device)
    data = featurize(codes, kind.tokenizer)
    data.records["label"] = labels
    lengths = data.records["n_tokens"].to_numpy()
    body = args.max_length - 2
    n_windows = np.array([len(windows(int(n), body, min(args.stride, body))) for n in lengths])
    print(f"tokens per function: p50={int(np.median(lengths))} p90={int(np.percentile(lengths, 90))} "
          f"max={int(lengths.max())}; {np.mean(n_windows > 1):.1%} need more than one {args.max_length}-token "
          f"window ({int(n_windows.max())} at most), covered by overlapping windows, never truncated")
    print(f"model: {args.base_model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters) on "
          f"{device}, {torch.get_num_threads()} CPU threads, batch {args.batch_size}")

    # The timed samples: the first batches of a real bucketed epoch (random batches of similar length);
    # the other modes train on exactly these samples in random batches.
    bucketed = list(kind.batches(data, args.batch_size, shuffle=True, seed=args.seed))[: args.batches]
    chosen = [i for b in bucketed for i in b.index]
    random.Random(args.seed).shuffle(chosen)
    dynamic = [kind.collate(data, chosen[k : k + args.batch_size]) for k in range(0, len(chosen), args.batch_size)]
    pad = kind._special_ids()[2]
    fixed = [Batch(fixed_padding(b.inputs, args.max_length, pad), b.labels, b.index) for b in dynamic]

    epoch_slots(kind, data, args)
    modes = {"dynamic+bucketing": bucketed, f"fixed-{args.max_length}": fixed, **({"dynamic": dynamic} if args.unbucketed else {})}
    rates = time_training(kind, model, {name: [Batch(to_device(b.inputs, device), b.labels, b.index) for b in batches]
                                        for name, batches in modes.items()}, device)
    fixed_rate = rates[f"fixed-{args.max_length}"]
    speedup = rates["dynamic+bucketing"] / fixed_rate
    alone = f" (dynamic padding alone: {rates['dynamic'] / fixed_rate:.2f}x)" if "dynamic" in rates else ""
    print(f"train speed-up, dynamic padding + bucketing vs fixed {args.max_length}: {speedup:.2f}x{alone}")

    infer = featurize(codes[: args.infer_samples], kind.tokenizer)
    score_split(kind, model, featurize(codes[: args.batch_size], kind.tokenizer), 32)  # warm-up
    _sync(device)
    started = time.perf_counter()
    score_split(kind, model, infer, 32)
    _sync(device)
    infer_rate = len(infer) / (time.perf_counter() - started)
    print(f"inference dynamic+bucketing, batch 32: {len(infer)} samples -> {infer_rate:.2f} samples/s")
    print(f"RESULT train_speedup={speedup:.2f} infer_samples_per_s={infer_rate:.2f}")


def epoch_slots(kind: Any, data: Any, args: argparse.Namespace) -> None:
    """Exact token slots (padding included) of one whole training epoch, bucketed vs fixed."""
    real = bucketed = windows = 0
    for batch in kind.batches(data, args.batch_size, shuffle=True, seed=args.seed):
        real += int(batch.inputs["attention_mask"].sum())
        bucketed += batch.inputs["input_ids"].numel()
        windows += batch.inputs["input_ids"].shape[0]
    fixed = windows * args.max_length
    print(f"one epoch: {windows} windows; token slots fixed-{args.max_length} {fixed:,}, dynamic+bucketing "
          f"{bucketed:,} ({fixed / bucketed:.2f}x fewer); real tokens {real:,} ({real / fixed:.0%} of fixed)")


if __name__ == "__main__":
    main()
