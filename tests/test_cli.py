"""The streamguard-ml CLI: JSON shapes of interfaces.md and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, store: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streamguard_ml.cli", *args]
    if store:
        cmd += ["--store", store]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def cli_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal (as in an interactive shell) and stdout on a pipe:
    (exit status, stdout, what the terminal showed)."""
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "streamguard_ml.cli", *args], stdout=subprocess.PIPE,
                            stderr=slave, text=True, env={k: v for k, v in os.environ.items() if k != "STREAMGUARD_LOG"})
    os.close(slave)
    shown: list[bytes] = []

    def drain() -> None:  # the terminal must be read while the command runs, or it blocks when the buffer fills
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed its end
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=600)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out, b"".join(shown).decode(errors="replace")


def test_ingest_and_preprocess_json_shapes(tmp_path, tiny_base_model):
    store = str(tmp_path / "s")
    src = tmp_path / "extra.jsonl"
    src.write_text(json.dumps({"id": "x1", "code": "def f(c, q):\n    c.execute(q)\n", "label": 1}) + "\n{oops\n")
    out = cli("ingest", "--source", "synthetic:120", "--source", f"jsonl:{src}", "--out", "r", "--json", store=store)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) >= {"run", "accepted", "quarantined", "quarantine_reasons", "quarantine_file"}
    assert doc["accepted"] == 121 and doc["quarantine_reasons"] == {"malformed_json": 1}
    out = cli("preprocess", "--run", "r", "--base-model", tiny_base_model, "--json", store=store)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc["splits"]) == {"train", "val", "test"}
    first = json.loads(Path(doc["manifest"]).read_text().splitlines()[0])
    assert set(first) >= {"id", "split", "pair_id", "group"}


def test_graph_command(tmp_path):
    f = tmp_path / "v.py"
    f.write_text("import os\n\ndef run(cmd):\n    os.system('ls ' + cmd)\n")
    out = cli("graph", str(f), "--json")
    assert out.returncode == 0, out.stderr
    g = json.loads(out.stdout)
    assert any("sink" in n["marks"] for n in g["nodes"])
    assert {e["type"] for e in g["edges"]} >= {"ast", "dfg", "call"}


@pytest.mark.parametrize("args,needle", [
    (("ingest", "--source", "jsonl:/does/not/exist.jsonl", "--out", "r"), "exist.jsonl"),
    (("ingest", "--source", "parquet:/x", "--out", "r"), "KIND:PATH"),
    (("preprocess", "--run", "never-ingested"), "streamguard-ml ingest"),
    (("registry", "show", "taint-flow-gnn", "latest"), "does not exist"),  # a mistyped --store is no empty store
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, needle):
    out = cli(*args, store=str(tmp_path / "s"))
    assert out.returncode != 0
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_train_evaluate_predict_through_the_cli(processed_run, tmp_path):
    store, run, _, _ = processed_run
    # on a terminal, training shows its epoch lines as they come (no STREAMGUARD_LOG needed)
    code, stdout, terminal = cli_on_a_terminal("train", "--run", run, "--model-type", "gnn", "--epochs", "2",
                                               "--json", "--store", store.root)
    assert code == 0, terminal[-2000:]
    assert "Epoch 1/2: Train Loss=" in terminal and "Epoch 2/2: Train Loss=" in terminal, terminal[-2000:]
    trained = json.loads(stdout)
    assert trained["model_uri"].endswith("model.tar.gz") and 0 <= trained["validation"]["f1"] <= 1

    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"accuracy": 0.5}))
    reg = cli("registry", "register", "--model", "taint-flow-gnn", "--artifact", trained["model_uri"],
              "--metrics", str(metrics), "--json", store=store.root)
    version = json.loads(reg.stdout)["version"]

    out = cli("evaluate", "--run", run, "--model-version", str(version), "--json", store=store.root)
    assert out.returncode == 0, out.stderr[-2000:]
    ev = json.loads(out.stdout)["metrics"]
    assert set(ev) >= {"accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy"}

    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "v", "code": "def f(c, x):\n    c.execute('SELECT ' + x)\n"}) + "\n"
                   + "not json\n" + json.dumps({"id": "s", "code": "def g():\n    return 1\n"}) + "\n")
    outp = tmp_path / "out.jsonl"
    out = cli("predict", "--model-version", "latest", "--input", str(inp), "--output", str(outp), "--json",
              store=store.root)
    assert out.returncode == 4, out.stderr[-2000:]  # 4: written, but line 2 is an error row
    rows = [json.loads(line) for line in outp.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["v", "line-2", "s"]  # input order, one line per input line
    assert rows[1]["label"] is None and "line 2" in rows[1]["error"]
    assert all(0 <= r["score"] <= 1 and r["label"] in (0, 1) for r in (rows[0], rows[2]))
    # decisions are taken at the version's own threshold (chosen on validation) unless --threshold says
    summary = json.loads(out.stdout)
    registered = json.loads(cli("registry", "show", "taint-flow-gnn", str(version), "--json", store=store.root).stdout)
    assert summary["threshold_source"] == "version"
    assert summary["threshold"] == pytest.approx(registered["operating_point"]["threshold"])
    assert all(r["label"] == int(r["score"] >= summary["threshold"]) for r in (rows[0], rows[2]))
    assert ev["threshold"] == pytest.approx(summary["threshold"]) and set(ev["at_0.5"]) >= {"f1", "fpr"}
    low = cli("predict", "--model-version", "latest", "--input", str(inp), "--output", str(outp), "--threshold",
              "0", "--json", store=store.root)
    assert json.loads(low.stdout)["threshold_source"] == "--threshold"
    assert [json.loads(line)["label"] for line in outp.read_text().splitlines()] == [1, None, 1]
    bad = cli("predict", "--model-version", "latest", "--input", str(inp), "--output", str(outp), "--threshold",
              "1.5", store=store.root)
    assert bad.returncode != 0 and "--threshold 1.5" in bad.stderr


# -- issue 18 item 6: a CLI that feels native ---------------------------------------------------------------

HEADLINE = {"accuracy": 0.912, "precision": 0.874, "recall": 0.833, "f1": 0.853, "fpr": 0.041, "roc_auc": 0.955,
            "pairwise_accuracy": 0.781}


@pytest.fixture(scope="module")
def gnn_archive(tmp_path_factory) -> Path:
    """A real (untrained, tiny) GNN packed as a model archive: predict and explain really run it."""
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.inference import pack_archive
    from streamguard_ml.kinds import GNNKind

    out = tmp_path_factory.mktemp("gnn")
    kind = GNNKind()
    hp, cfg = {"hidden": 16, "layers": 1, "heads": 2}, {"vocabulary_size": vocabulary()["size"]}
    (out / "model").mkdir()
    kind.save(kind.build(cfg, hp), out / "model", cfg, hp)
    archive = out / "model.tar.gz"
    archive.write_bytes(pack_archive(out / "model"))
    return archive


@pytest.fixture(scope="module")
def reg_store(gnn_archive, tmp_path_factory) -> str:
    """taint-flow-gnn v1 (a smoke run, with a test-data statement and a decision) and v2 (better, no smoke)."""
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("reg") / "store")
    reg = Registry(store)
    test_data = {"statement": "test split of run r1: 58 functions, none seen in training", "content_hash": "c0ffee12"}
    reg.register("taint-flow-gnn", str(gnn_archive), {**HEADLINE, "test_data": test_data},
                 lineage={"run": "r1", "sources": ["sven:/data/sven"], "code_version": "0.1.0+gabc", "smoke": True},
                 decision={"promote": False, "reasons": ["fails: smoke run", "ok: accuracy 0.912 vs floor 0.6"]})
    reg.register("taint-flow-gnn", str(gnn_archive), {**HEADLINE, "accuracy": 0.95, "f1": 0.9, "test_data": test_data},
                 lineage={"run": "r2", "smoke": False})  # the same test data: v1 and v2 compare directly
    return store.root


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit status, stdout, stderr)."""
    from streamguard_ml.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_global_options_work_before_and_after_the_command(reg_store, tmp_path, capsys):
    for argv in (["--store", reg_store, "registry", "list", "--json"], ["registry", "list", "--store", reg_store, "--json"],
                 ["--json", "--store", reg_store, "registry", "list"], ["--json", "registry", "list", "--store", reg_store]):
        code, out, err = run_main(capsys, *argv)
        assert code == 0, (argv, err)
        assert [v["version"] for v in json.loads(out)] == [1, 2], argv
    # given in both places, the one after the command wins; one given before is not reset by the command's default
    code, out, _ = run_main(capsys, "--store", str(tmp_path / "nope"), "registry", "list", "--store", reg_store, "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, _, err = run_main(capsys, "--store", str(tmp_path / "nope"), "registry", "list")
    assert code == 2 and "nope" in err


def test_version_prints_the_installed_distribution_version():
    from importlib.metadata import version

    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"streamguard-ml {version('streamguard-ml')}"


@pytest.mark.parametrize("argv,needles", [
    (("registry", "list", "--store", "{missing}"), ("missing", "does not exist", "--store")),
    (("registry", "list", "--store", "{foreign}"), ("holds no StreamGuard store",)),
    (("drift", "check", "--store", "{missing}"), ("does not exist",)),
    (("registry", "list", "--model", "nosuch"), ("no model 'nosuch'", "registered models: taint-flow-gnn")),
    (("registry", "show", "gnn", "9"), ("no version 9", "[1, 2]")),
    (("registry", "show", "gnn", "lastest"), ("'lastest'", "latest, deployed")),
    (("registry", "compare", "nosuch", "1", "2"), ("no model 'nosuch'",)),
    (("registry", "promote", "gnn", "7"), ("no version 7",)),
    (("predict", "--model", "nosuch", "--model-version", "1", "--input", "{input}", "--output", "{output}"),
     ("no model 'nosuch'",)),
])
def test_unknown_store_model_or_version_is_one_line_and_exit_2(reg_store, tmp_path, capsys, argv, needles):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "code": "def f():\n    return 1\n"}) + "\n")
    names = {"missing": tmp_path / "missing", "foreign": foreign, "input": tmp_path / "in.jsonl",
             "output": tmp_path / "out.jsonl"}
    argv = [a.format(**names) for a in argv]
    code, out, err = run_main(capsys, *argv, *([] if "--store" in argv else ["--store", reg_store]))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert all(n in err for n in needles), err


def test_commands_that_create_a_store_still_accept_a_new_directory(tmp_path, capsys):
    code, out, err = run_main(capsys, "ingest", "--source", "synthetic:20", "--out", "r", "--store",
                              str(tmp_path / "fresh"), "--json")
    assert code == 0, err
    assert json.loads(out)["accepted"] > 0 and (tmp_path / "fresh" / "runs").is_dir()


def test_every_version_argument_takes_aliases(reg_store, gnn_archive, tmp_path, capsys):
    import shutil

    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    store = str(tmp_path / "copy")
    shutil.copytree(reg_store, store)  # promotes below must not touch the shared fixture
    code, out, err = run_main(capsys, "registry", "promote", "gnn", "best:accuracy", "--store", store, "--json")
    assert code == 0 and json.loads(out)["version"] == 2, err
    code, out, err = run_main(capsys, "registry", "compare", "gnn", "1", "deployed", "--store", store, "--json")
    assert code == 0 and (json.loads(out)["a"], json.loads(out)["b"]) == (1, 2), err
    code, out, _ = run_main(capsys, "registry", "compare", "taint-flow-gnn", "latest", "1", "--store", store, "--json")
    assert json.loads(out)["metrics"]["accuracy"]["delta"] == pytest.approx(0.912 - 0.95)
    code, out, _ = run_main(capsys, "registry", "show", "gnn", "champion", "--store", store, "--json")
    assert json.loads(out)["version"] == 2 and json.loads(out)["aliases"] == ["champion"]
    Registry(LocalStore(store)).register("taint-flow-gnn", str(gnn_archive), HEADLINE, lineage={"smoke": False})
    code, out, err = run_main(capsys, "registry", "promote", "gnn", "3", "--store", store)
    assert code == 0 and "v3 is now the champion" in out, err


def test_compare_warns_when_the_registry_says_the_versions_are_not_comparable(reg_store, capsys, monkeypatch):
    from streamguard_ml.registry import Registry

    real = Registry.compare
    monkeypatch.setattr(Registry, "compare", lambda self, m, a, b: {
        **real(self, m, a, b), "comparable": False, "why_not": "v1 was tested on other data (hash c0ffee12 vs none)"})
    code, out, _ = run_main(capsys, "registry", "compare", "gnn", "1", "2", "--store", reg_store)
    first = out.splitlines()[0]
    assert code == 0 and first.startswith("WARNING: v1 and v2 are not comparable") and "c0ffee12" in first
    from streamguard_ml.cli.registry import comparison_lines

    gate = comparison_lines({"model": "m", "a": 1, "b": 2, "comparable": True, "basis": "gate", "paired_on": "run r2",
                             "metrics": {"f1": {"a": 0.5, "b": 0.56, "delta": 0.06}}})
    assert gate == ["m: v1 -> v2", "  paired numbers: both versions scored by the promotion gate on run r2",
                    "  f1                   0.5000 -> 0.5600 (+0.0600)"]
    monkeypatch.setattr(Registry, "compare", real)
    code, out, _ = run_main(capsys, "registry", "compare", "gnn", "1", "2", "--store", reg_store)
    assert code == 0 and "WARNING" not in out and "accuracy" in out and "(+0.0380)" in out


def test_registry_show_is_a_human_summary_and_json_the_whole_document(reg_store, capsys):
    code, out, _ = run_main(capsys, "registry", "show", "gnn", "1", "--store", reg_store)
    assert code == 0 and out.startswith("taint-flow-gnn v1: registered")
    for needle in ("smoke run      YES", "threshold      0.500", "accuracy=0.912", "roc_auc=0.955",
                   "pairwise_accuracy=0.781", "58 functions, none seen in training", "c0ffee12", "run            r1",
                   "sven:/data/sven", "0.1.0+gabc", "fails: smoke run", "ok: accuracy 0.912", "model.tar.gz",
                   "model card     not written yet: streamguard-ml registry card taint-flow-gnn 1"):
        assert needle in out, needle
    assert "{" not in out  # not the JSON document
    code, out, _ = run_main(capsys, "registry", "show", "gnn", "latest", "--store", reg_store)
    assert "smoke run      no" in out
    code, out, _ = run_main(capsys, "registry", "show", "gnn", "1", "--json", "--store", reg_store)
    doc = json.loads(out)
    assert doc["metrics"]["test_data"]["content_hash"] == "c0ffee12" and doc["lineage"]["smoke"] is True


def test_registry_list_stays_readable_at_80_columns(reg_store, capsys):
    from rich.console import Console

    from streamguard_ml.cli.registry import versions_table
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(versions_table([mv.to_dict() for mv in Registry(LocalStore(reg_store)).list()]))
    text = console.export_text()
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("gnn")]
    assert rows == [["gnn", "1", "registered", "smoke", "-", "0.912", "0.853", "0.041", "0.955", "0.781"],
                    ["gnn", "2", "registered", "-", "0.950", "0.900", "0.041", "0.955", "0.781"]], text
    header = next(line.split() for line in text.splitlines() if "status" in line)
    assert header == ["model", "v", "status", "aliases", "acc", "f1", "fpr", "auc", "pair"]
    assert max(map(len, text.splitlines())) <= 80 and "gnn = taint-flow-gnn" in text
    # the command itself honours $COLUMNS when its output is not a terminal
    out = subprocess.run([sys.executable, "-m", "streamguard_ml.cli", "registry", "list", "--store", reg_store],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0 and max(map(len, out.stdout.splitlines())) <= 80 and "0.912" in out.stdout


def test_the_jobs_table_stays_readable_at_80_columns_and_keeps_job_names_whole_when_wide():
    from rich.console import Console

    from streamguard_ml.cli.sagemaker import jobs_table

    name = "sg-shared-gnn-20250101-120000-abcd"
    row = {"name": name, "status": "InProgress", "secondary_status": "Training", "instance_count": 2,
           "instance_type": "ml.p3.2xlarge", "spot": True, "seconds": 3725,
           "metrics": {"train:loss": 0.1234, "validation:accuracy": 0.9, "validation:f1": 0.8771}}
    for width in (80, 160):
        console = Console(width=width, record=True, file=open(os.devnull, "w"))
        console.print(jobs_table([row], width))
        text = console.export_text()
        assert max(map(len, text.splitlines())) <= width
        first = next(line for line in text.splitlines() if line.startswith(" sg-"))
        assert first.split()[-4:] == ["1h02m05s", "0.123", "0.900", "0.877"], text
        assert (name in text) == (width == 160) and "InProgress" in text


def test_a_closed_pipe_ends_quietly_with_exit_141(reg_store, tmp_path):
    """`streamguard-ml registry list | head -1` used to end in a BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "streamguard_ml.cli", "registry", "list", "--json", "--store",
                             reg_store], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command writes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err.decode() == "", err.decode()
    # and through a shell pipeline into head, with more output than a pipe buffers
    big = tmp_path / "big.py"
    big.write_text("".join(f"def f{i}(c, q):\n    c.execute('SELECT ' + q)\n" for i in range(400)))
    shell = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m streamguard_ml.cli graph {big} "
                            "--json | head -1; echo \"exit=${PIPESTATUS[0]}\" >&2"],
                           capture_output=True, text=True, timeout=120)
    assert shell.stdout == "{\n" and shell.stderr.strip() == "exit=141", shell.stderr


def test_every_option_and_positional_of_every_command_has_help():
    import argparse

    from streamguard_ml.cli import build_parser

    missing, seen = [], 0

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        nonlocal seen
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not (choice.help or "").strip():
                        missing.append(f"{path} {choice.dest} (command)")
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
                continue
            seen += 1
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "streamguard-ml")
    assert seen > 60 and missing == []
    assert "STREAMGUARD_LOG" in build_parser().format_help()


def test_long_running_commands_log_progress_on_a_terminal_unless_told_otherwise(monkeypatch):
    import argparse

    from streamguard_ml.cli import log_level

    monkeypatch.delenv("STREAMGUARD_LOG", raising=False)
    ns = lambda command, **kw: argparse.Namespace(command=command, **{"verbose": 0, "quiet": False, **kw})  # noqa: E731
    assert log_level(ns("train"), stderr_is_tty=True) == "INFO"  # the epoch lines, without STREAMGUARD_LOG
    assert log_level(ns("train"), stderr_is_tty=False) == "WARNING"  # a log file / CI gets no chatter
    assert log_level(ns("registry"), stderr_is_tty=True) == "WARNING"
    assert log_level(ns("train", quiet=True), stderr_is_tty=True) == "WARNING"
    assert log_level(ns("registry", verbose=1), stderr_is_tty=False) == "INFO"
    assert log_level(ns("registry", verbose=2), stderr_is_tty=False) == "DEBUG"
    monkeypatch.setenv("STREAMGUARD_LOG", "error")
    assert log_level(ns("train"), stderr_is_tty=True) == "ERROR"
    assert log_level(ns("train", verbose=1), stderr_is_tty=True) == "INFO"  # a flag wins over the environment


def test_a_bad_streamguard_log_is_one_line(capsys, monkeypatch, reg_store):
    monkeypatch.setenv("STREAMGUARD_LOG", "LOUD")
    code, _, err = run_main(capsys, "registry", "list", "--store", reg_store)
    assert code == 2 and "STREAMGUARD_LOG 'LOUD' is not a log level" in err and len(err.strip().splitlines()) == 1


VULNERABLE_PY = '''import sqlite3

LIMIT = 10


class Repo:
    table = "users"

    def find(self, conn, name):
        query = "SELECT * FROM users WHERE name = '" + name + "'"
        return conn.execute(query).fetchall()


def run(cmd):
    import os
    os.system("ping " + cmd)


def safe():
    return 1
'''


def test_predict_scores_each_function_of_a_python_file(reg_store, tmp_path, capsys):
    src = tmp_path / "app.py"
    src.write_text(VULNERABLE_PY)
    outp = tmp_path / "out.jsonl"
    code, out, err = run_main(capsys, "predict", "--input", str(src), "--output", str(outp), "--model", "gnn",
                              "--model-version", "latest", "--store", reg_store)
    assert code == 0, err
    rows = [json.loads(line) for line in outp.read_text().splitlines()]
    assert [(r["function"], r["kind"], r["start_line"], r["end_line"]) for r in rows] == [
        ("<module>", "module", 1, 7), ("Repo.find", "method", 9, 11), ("run", "function", 14, 16),
        ("safe", "function", 19, 20)]
    assert all(0 <= r["score"] <= 1 and r["path"] == str(src) and r["version"] == 2 for r in rows)
    assert f"{src}:Repo.find (lines 9-11): " in out and f"{src}:safe (lines 19-20): " in out
    # a directory: every .py file below it, and a file that does not parse is an error row, never a silent skip
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "ok.py").write_text("def g(x):\n    return x\n")
    (tmp_path / "pkg" / "bad.py").write_text("def ok():\n    pass\n\ndef broken(:\n    pass\n")
    code, out, err = run_main(capsys, "predict", "--input", str(tmp_path / "pkg"), "--output", str(outp),
                              "--model-version", "latest", "--store", reg_store, "--json")
    assert code == 4
    rows = [json.loads(line) for line in outp.read_text().splitlines()]
    bad, ok = rows
    assert bad["score"] is None and bad["reason"] == "parse_error" and bad["line"] == 4
    assert bad["path"].endswith("bad.py") and bad["error"].startswith("line 4: not valid Python")
    assert ok["function"] == "g" and 0 <= ok["score"] <= 1
    assert json.loads(out)["error_units"] == [f"{tmp_path / 'pkg' / 'bad.py'} line 4"]
    assert len(err.strip().splitlines()) == 1 and "bad.py line 4" in err


def test_predict_on_a_python_file_applies_the_per_function_limits_to_each_function(reg_store, tmp_path, capsys):
    src = tmp_path / "big.py"
    src.write_text("def small(x):\n    return x\n\n\ndef big(x):\n" + "    y = x + 1\n" * 40 + "    return y\n")
    outp = tmp_path / "out.jsonl"
    code, _, err = run_main(capsys, "predict", "--input", str(src), "--output", str(outp), "--model-version", "1",
                            "--max-function-lines", "20", "--store", reg_store)
    small, big = [json.loads(line) for line in outp.read_text().splitlines()]
    assert code == 4 and 0 <= small["score"] <= 1 and (big["reason"], big["line"], big["function"]) == ("too_long", 5, "big")
    assert f"{src}:big (lines 5-46)" in err


def test_explain_explains_each_function_of_a_python_file_in_file_line_numbers(reg_store, tmp_path, capsys):
    src = tmp_path / "app.py"
    src.write_text(VULNERABLE_PY)
    code, out, err = run_main(capsys, "explain", "--input", str(src), "--method", "attention", "--model-version",
                              "latest", "--store", reg_store, "--json")
    assert code == 0, err
    docs = {d["function"]: d for d in json.loads(out)}
    assert set(docs) == {"<module>", "Repo.find", "run", "safe"}
    file_lines = VULNERABLE_PY.splitlines()
    for d in docs.values():
        assert d["top_lines"] and 0 <= d["score"] <= 1
        for t in d["top_lines"]:  # the file's line numbers, and the file's text at them
            assert d["start_line"] <= t["line"] <= d["end_line"] and file_lines[t["line"] - 1].strip() == t["text"]
    src.write_text("def broken(:\n")
    code, _, err = run_main(capsys, "explain", "--input", str(src), "--model-version", "latest", "--store", reg_store)
    assert code == 2 and f"{src} line 1 skipped (parse_error)" in err
