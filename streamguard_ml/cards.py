"""Dataset cards: what went into a run, in Markdown for people and JSON for tools."""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import layout
from .store import Store


def _quantiles(values: Any) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {}
    q = np.percentile(arr, [0, 50, 90, 99, 100])
    return {"min": float(q[0]), "p50": float(q[1]), "p90": float(q[2]), "p99": float(q[3]),
            "max": float(q[4]), "mean": round(float(arr.mean()), 2)}


def quarantine_summary(store: Store, run: str, shards: list[dict]) -> dict[str, Any]:
    rows = store.read_jsonl(layout.quarantine(run)) if store.exists(layout.quarantine(run)) else []
    for shard in shards:
        key = f"{layout.shard_dir(run, shard['split'], shard['index'])}/quarantine.jsonl"
        if store.exists(key):
            rows += store.read_jsonl(key)
    reasons = Counter(r["reason"] for r in rows)
    by_source = Counter(r["source"] for r in rows)
    return {"total": len(rows), "reasons": dict(sorted(reasons.items())),
            "by_source": dict(by_source.most_common(20)), "file": store.uri(layout.quarantine(run))}


def dataset_summary(records: Any) -> dict[str, Any]:
    """Counts per source × label × CWE × split and length distributions."""
    cols = ["source", "label", "cwe", "split"]
    frame = records.assign(cwe=records["cwe"].fillna("unknown"))
    table = frame.groupby(cols).size().reset_index(name="count")
    return {
        "samples": int(len(records)),
        "augmented": int(records["id"].str.contains("~aug", regex=False).sum()),
        "pairs": int(records["pair_id"].dropna().nunique()),
        "counts": [{**{c: (int(r[c]) if c == "label" else r[c]) for c in cols}, "count": int(r["count"])}
                   for _, r in table.iterrows()],
        "per_split": {s: {"total": int(len(g)), "vulnerable": int(g["label"].sum())}
                      for s, g in records.groupby("split")},
        "lengths": {"lines": _quantiles(records["n_lines"]), "tokens": _quantiles(records["n_tokens"]),
                    "nodes": _quantiles(records["n_nodes"])},
    }


def write_dataset_card(store: Store, run: str, records: Any, meta: dict, shards: list[dict]) -> dict:
    card = {"run": layout.run_key(run), **meta, **dataset_summary(records),
            "quarantine": quarantine_summary(store, run, shards)}
    store.write_json(layout.dataset_card(run, "json"), card)
    store.write_bytes(layout.dataset_card(run, "md"), render_dataset_card(card).encode())
    return card


def render_dataset_card(card: dict) -> str:
    lines = [f"# Dataset card — run `{card['run']}`", "",
             f"- Content hash (lineage): `{card['content_hash']}`",
             f"- Samples: {card['samples']} ({card['augmented']} augmented), pairs: {card['pairs']}",
             f"- Tokenizer / base model: `{card['base_model']}`; graph format `{card['graph_format']}`, "
             f"node vocabulary `{card['vocabulary']}`, taint rules `{card['rules']}`", "",
             "## Splits", "", "| split | samples | vulnerable |", "|---|---|---|"]
    lines += [f"| {s} | {v['total']} | {v['vulnerable']} |" for s, v in card["per_split"].items()]
    lines += ["", "## Counts by source × label × CWE × split", "",
              "| source | label | CWE | split | count |", "|---|---|---|---|---|"]
    lines += [f"| {c['source']} | {c['label']} | {c['cwe']} | {c['split']} | {c['count']} |" for c in card["counts"]]
    lines += ["", "## Lengths", "", "| measure | min | p50 | p90 | p99 | max | mean |", "|---|---|---|---|---|---|---|"]
    for name, q in card["lengths"].items():
        if q:
            lines.append(f"| {name} | {q['min']:.0f} | {q['p50']:.0f} | {q['p90']:.0f} | {q['p99']:.0f} | "
                         f"{q['max']:.0f} | {q['mean']} |")
    quarantine = card["quarantine"]
    lines += ["", f"## Quarantine ({quarantine['total']} inputs)", "", f"File: `{quarantine['file']}`", ""]
    lines += [f"- {reason}: {n}" for reason, n in quarantine["reasons"].items()] or ["- none"]
    return "\n".join(lines) + "\n"
