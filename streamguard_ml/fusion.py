"""The taint-fusion detector: one decision from the GNN, the transformer and the taint analysis.

Each of the three sees something the others miss: the GNN the program graph, the
transformer the text, the taint analysis (``graphs.py``) whether attacker input
reaches a sink unsanitised — and the rules are the one part that knows vulnerability
classes no training pair showed.  The fusion detector is a standardised logistic
regression (scikit-learn) over

* each member's *calibrated* log-odds (``gnn``, ``transformer``: whichever were trained);
* the taint evidence of the function's graph: how many tainted sinks, sinks,
  sanitizers, sources and tainted values it holds (``log1p`` of the counts);

fitted on the **validation** split, which neither member trained on.  Its decision
threshold is chosen by the usual policy on *out-of-fold* validation scores (grouped
by pair, so a function and its fix are predicted by a model that saw neither), and
its scores are probabilities by construction (calibration ``none``).

The archive holds the members' own model directories (``gnn/``, ``transformer/``)
beside the fitted weights in ``streamguard_model.json``, so a registered version is
self-contained: it is scored, served and explained like the other two.  An
explanation adds the members' line attributions, each weighted by its coefficient,
and the taint evidence on the lines of the marked nodes, all in units of the
detector's log-odds.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .graphs import MARK_BIT

log = logging.getLogger(__name__)

MEMBERS = ("gnn", "transformer")
#: Taint evidence counted per function: feature name → the node mark it counts.
TAINT_FEATURES = {"tainted_sinks": "tainted_sink", "sinks": "sink", "sanitizers": "sanitizer",
                  "sources": "source", "tainted": "tainted"}
#: Inverse regularisation strength of the logistic regression (standardised features, ~100 samples).
REGULARISATION_C = 1.0
#: Log-odds clip for the members' calibrated probabilities.
_CLIP = 1e-6


def taint_evidence(graphs: dict[str, np.ndarray]) -> np.ndarray:
    """``[functions, len(TAINT_FEATURES)]`` counts of marked nodes per graph."""
    ptr, marks = graphs["node_ptr"], graphs["node_marks"].astype(np.int64)
    graph_of = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    out = np.zeros((len(ptr) - 1, len(TAINT_FEATURES)), dtype=np.float64)
    for j, mark in enumerate(TAINT_FEATURES.values()):
        np.add.at(out[:, j], graph_of, (marks & MARK_BIT[mark]) > 0)
    return out


def _logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), _CLIP, 1 - _CLIP)
    return np.log(p / (1 - p))


@dataclass
class FusionModel:
    """The fitted detector: members (``LoadedModel`` s) and standardised logistic-regression weights."""

    members: dict[str, Any]
    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def weights(self) -> dict[str, float]:
        """Each feature's weight per raw unit (what a one-unit change adds to the log-odds)."""
        return {name: float(c / s) for name, c, s in zip(self.features, self.coef, self.scale)}


def feature_names(members: Sequence[str]) -> list[str]:
    return [*members, *TAINT_FEATURES]


def feature_matrix(members: dict[str, Any], data: Any, batch_size: int = 32) -> np.ndarray:
    """The detector's inputs for a split, in :func:`feature_names` order (members first, as given)."""
    columns = [_logit(members[name].score(data, batch_size).prob) for name in members]
    return np.column_stack([*columns, np.log1p(taint_evidence(data.graphs))])


class FusionKind:
    """The model-kind interface (``kinds.py``) for the fusion detector."""

    name = "fusion"

    def __init__(self) -> None:
        self.model: FusionModel | None = None

    @property
    def tokenizer(self) -> Any:
        """The transformer member's tokenizer (raw code must be tokenized for it), or None."""
        member = (self.model.members if self.model else {}).get("transformer")
        return member.kind.tokenizer if member is not None else None

    def load(self, directory: Path) -> tuple[FusionModel, dict[str, Any]]:
        from .inference import LoadedModel
        from .kinds import CONFIG_FILE

        config = json.loads((Path(directory) / CONFIG_FILE).read_text())
        weights = config["weights"]
        members = {name: LoadedModel(Path(directory) / name) for name in config["members"]}
        self.model = FusionModel(members, list(weights["features"]), np.asarray(weights["mean"]),
                                 np.asarray(weights["scale"]), np.asarray(weights["coef"]),
                                 float(weights["intercept"]))
        return self.model, config

    def score(self, model: FusionModel, data: Any, batch_size: int = 32) -> Any:
        from .inference import Scores
        from .calibration import sigmoid

        z = model.decision(feature_matrix(model.members, data, batch_size))
        prob = sigmoid(z)
        return Scores(prob, None, z, prob.copy())


# -- training ------------------------------------------------------------------------------
def train_fusion(args: argparse.Namespace) -> dict[str, Any]:
    """``python -m streamguard_ml.train --model-type fusion``: fit on validation, write the model directory."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from .dataset import load_split
    from .inference import LoadedModel
    from .train import decision_rule, model_directory, output_dir, require_dir, write_summary

    val = load_split(require_dir(args.validation, "validation", "SM_CHANNEL_VALIDATION"))
    paths = {"gnn": args.gnn_model, "transformer": args.transformer_model}
    members = {name: LoadedModel(model_directory(paths[name], f"--{name}-model")) for name in MEMBERS if paths[name]}
    if not members:
        raise SystemExit("the fusion detector needs trained members: pass --gnn-model and/or --transformer-model "
                         "(or the SM_CHANNEL_GNN / SM_CHANNEL_TRANSFORMER channels)")
    y = val.labels
    if len(set(y.tolist())) < 2:
        raise SystemExit(f"the validation split ({len(y)} functions) has one class only: the fusion detector "
                         "cannot be fitted; add data so validation holds vulnerable and safe functions")
    x = feature_matrix(members, val, args.batch_size)
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    lr = LogisticRegression(C=REGULARISATION_C, max_iter=2000).fit((x - scaler.mean_) / scale, y)
    oof = out_of_fold_decision(x, y, _groups(val.records))
    decision = decision_rule(argparse.Namespace(**{**vars(args), "calibration": "none"}), y, oof)
    model_dir = output_dir(args)
    names = feature_names(list(members))
    weights = {"features": names, "mean": scaler.mean_.tolist(), "scale": scale.tolist(),
               "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}
    for name, member in members.items():
        shutil.copytree(member.directory, model_dir / name, dirs_exist_ok=True)
    from .kinds import save_config
    from .records import fingerprints

    save_config(model_dir, {"model_type": "fusion", "members": list(members), "weights": weights,
                            "dataset": val.meta, "hyperparameters": _fusion_hp(args), **decision["extras"],
                            "trained_on": {"fingerprints": fingerprints(val.records["code"]),
                                           "val_samples": len(val)}})
    log.info("fusion weights per unit: %s", {n: round(w, 3) for n, w in zip(
        names, (lr.coef_[0] / scale).tolist())})
    return write_summary(model_dir, args, _fusion_hp(args), [], decision, None, val,
                         members={n: m.config.get("hyperparameters", {}) for n, m in members.items()},
                         weights=weights)


def _fusion_hp(args: argparse.Namespace) -> dict[str, Any]:
    return {"model_type": "fusion", "threshold_policy": args.threshold_policy, "max_fpr": args.max_fpr,
            "regularisation_c": REGULARISATION_C, "seed": args.seed}


def _groups(records: Any) -> list[str]:
    """Cross-validation groups: a pair (or, without one, the sample) stays in one fold."""
    pairs = records["pair_id"] if "pair_id" in records else [None] * len(records)
    return [str(p) if isinstance(p, str) and p else f"id:{i}" for p, i in zip(pairs, records["id"])]


def out_of_fold_decision(x: np.ndarray, y: np.ndarray, groups: Sequence[str], folds: int = 5) -> np.ndarray:
    """Log-odds of each validation function from a detector fitted without its fold (grouped, stratified)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, int(np.bincount(y).min()), len(set(groups)))
    if k < 2:
        fitted = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=2000)).fit(x, y)
        return fitted.decision_function(x)
    out = np.zeros(len(y))
    for fit_idx, held in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=0).split(x, y, groups):
        if len(set(y[fit_idx].tolist())) < 2:
            out[held] = 0.0
            continue
        fitted = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=2000))
        out[held] = fitted.fit(x[fit_idx], y[fit_idx]).decision_function(x[held])
    return out


# -- explanations --------------------------------------------------------------------------
def explain_fusion(loaded: Any, data: Any, indices: Sequence[int], method: str = "ig", top_units: int = 15) -> list:
    """Line attributions of the detector's log-odds: weighted member attributions + taint evidence lines."""
    from .explain import Explanation, explain_split

    model: FusionModel = loaded.model
    per_unit = model.weights()
    member_lines = {}
    for name, member in model.members.items():
        member_method = method if name == "gnn" else "ig"
        scale = per_unit[name] * _calibration_slope(member)
        member_lines[name] = (scale, explain_split(member, data, indices, member_method, top_units))
    scores = loaded.score(data).prob
    out = []
    for k, i in enumerate(indices):
        totals: dict[int, float] = {}
        for scale, explanations in member_lines.values():
            for line, attribution in explanations[k].lines:
                totals[line] = totals.get(line, 0.0) + scale * attribution
        units = _taint_units(data.graph(i), per_unit, totals)
        n_lines = len(str(data.records["code"].iloc[i]).splitlines())
        lines = sorted(((ln, a) for ln, a in totals.items() if 0 < ln <= n_lines), key=lambda kv: (-kv[1], kv[0]))
        units += [{"member": name, **u} for name, (_, ex) in member_lines.items() for u in ex[k].units[:3]]
        out.append(Explanation(str(data.records["id"].iloc[i]), f"fusion({method})", float(scores[i]), lines,
                               units[:top_units], None, loaded.threshold))
    return out


def _calibration_slope(member: Any) -> float:
    """d(calibrated log-odds)/d(raw log-odds) of a member: 1/T for temperature, the slope for Platt."""
    c = member.calibrator
    if c.method == "temperature":
        return 1.0 / float(c.params["temperature"])
    if c.method == "platt":
        return float(c.params["slope"])
    return 1.0


def _taint_units(graph: dict[str, np.ndarray], per_unit: dict[str, float], totals: dict[int, float]) -> list[dict]:
    """Spread each taint feature's contribution over the lines of the nodes it counts (adds to ``totals``)."""
    marks, lines = graph["node_marks"].astype(np.int64), graph["node_line"]
    units = []
    for name, mark in TAINT_FEATURES.items():
        nodes = np.flatnonzero(marks & MARK_BIT[mark])
        if not len(nodes):
            continue
        share = per_unit[name] * np.log1p(len(nodes)) / len(nodes)
        for j in nodes.tolist():
            totals[int(lines[j])] = totals.get(int(lines[j]), 0.0) + share
        units.append({"evidence": name, "count": int(len(nodes)), "lines": sorted({int(lines[j]) for j in nodes}),
                      "attribution": round(float(share * len(nodes)), 6)})
    return sorted(units, key=lambda u: -abs(u["attribution"]))
