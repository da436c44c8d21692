"""The SQL Intent Transformer path: windows, s3:// base models, the anomaly head,
resume, export without pickle, and Integrated Gradients on long functions.

Everything runs on the tiny 2-layer BERT of ``conftest.tiny_base_model`` and the
shared ``processed_run``; S3 is moto's real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from streamguard_ml import layout
from streamguard_ml.tokens import collate_windows, windows

MAX_LENGTH, STRIDE = 64, 48


def _long_function(statements: int, last: str = "    cursor.execute('SELECT * FROM t WHERE id = ' + uid)") -> str:
    body = "\n".join(f"    total_{i} = compute_value(records, index={i}, scale=factor * {i})" for i in range(statements))
    return f"def handler(cursor, records, uid, factor):\n{body}\n{last}\n"


# -- windows: long functions are covered, never truncated ---------------------------------------

@pytest.mark.parametrize("length,body,stride", [(1, 62, 48), (62, 62, 48), (63, 62, 48), (500, 62, 48),
                                                (1000, 126, 126), (777, 30, 7), (2028, 510, 384)])
def test_windows_cover_every_token_within_the_window(length, body, stride):
    spans = windows(length, body, stride)
    covered = np.zeros(length, dtype=int)
    for start, end in spans:
        assert 0 <= start < end <= length and end - start <= body
        covered[start:end] += 1
    assert covered.min() >= 1, "a token fell outside every window"
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(a[1] - b[0] >= body - stride for a, b in zip(spans, spans[1:]))  # the overlap is kept
    assert len({end - start for start, end in spans}) == 1  # equal windows: no short tail padded to full width
    sliding = 1 if length <= body else -(-(length - body) // stride) + 1
    assert len(spans) == sliding  # no more windows than sliding by ``stride`` would need


@pytest.mark.parametrize("body,stride", [(0, 48), (62, 0), (-2, 5)])
def test_window_settings_that_would_loop_forever_are_refused(body, stride):
    with pytest.raises(ValueError, match="at least 1"):
        windows(100, body, stride)


def test_collate_pads_to_the_longest_window_in_the_batch_only():
    short = [np.arange(5, 15), np.arange(5, 25)]
    wb = collate_windows(short, MAX_LENGTH, STRIDE, cls_id=1, sep_id=2, pad_id=0)
    assert wb.input_ids.shape == (2, 22)  # 20 tokens + [CLS] + [SEP], not MAX_LENGTH
    assert wb.attention_mask.sum(1).tolist() == [12, 22]
    long = [np.arange(3, 303)]
    wb = collate_windows(long, MAX_LENGTH, STRIDE, cls_id=1, sep_id=2, pad_id=0)
    assert wb.input_ids.shape[0] > 1 and wb.input_ids.shape[1] == MAX_LENGTH
    assert (wb.input_ids[:, 0] == 1).all() and wb.window_sample.tolist() == [0] * wb.input_ids.shape[0]
    seen = set()
    for row, mask in zip(wb.input_ids, wb.attention_mask):
        body = row[mask.bool()][1:-1].tolist()
        seen.update(body)
    assert seen == set(range(3, 303))


def test_the_end_of_a_long_function_changes_the_prediction(tiny_base_model):
    """Truncation to one window would make both functions identical to the model."""
    from streamguard_ml.inference import featurize, score_split
    from streamguard_ml.kinds import TransformerKind

    kind = TransformerKind(max_length=MAX_LENGTH, stride=STRIDE)
    torch.manual_seed(0)
    model = kind.build({"base_model": tiny_base_model}, {"base_model": tiny_base_model}).eval()
    safe_end = "    cursor.execute('SELECT * FROM t WHERE id = %s', (uid,))"
    data = featurize([_long_function(40), _long_function(40, safe_end)], kind.tokenizer)
    assert data.records["n_tokens"].min() > 8 * MAX_LENGTH
    batch = next(kind.batches(data, 2, shuffle=False, seed=0))
    assert batch.inputs["input_ids"].shape[0] > 16  # many windows per function
    prob = score_split(kind, model, data).prob
    assert abs(prob[0] - prob[1]) > 1e-6


def test_a_window_longer_than_the_encoder_is_a_clear_error(tiny_base_model):
    from streamguard_ml.kinds import TransformerKind

    with pytest.raises(ValueError, match="--max-length 512"):
        TransformerKind(max_length=1024, stride=256).build({"base_model": tiny_base_model}, {})


# -- s3:// base model over moto's HTTP server ---------------------------------------------------

@pytest.fixture
def aws_env(monkeypatch):
    """moto's S3 server on 127.0.0.1 (real HTTP) with dummy credentials; same contract as main's
    conftest ``aws_env`` (this module's copy can go once both branches meet)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    yield f"http://{host}:{port}"
    server.stop()


def test_base_model_from_s3(tiny_base_model, aws_env, tmp_path, monkeypatch):
    import boto3
    from transformers import AutoModel

    from streamguard_ml.kinds import TransformerKind
    from streamguard_ml.store import S3Store
    from streamguard_ml.tokens import load_tokenizer, resolve_base_model

    monkeypatch.setenv("STREAMGUARD_CACHE", str(tmp_path / "cache"))
    boto3.client("s3").create_bucket(Bucket="models-i5")
    keys = S3Store("s3://models-i5").upload_dir(tiny_base_model, "encoders/tiny-bert")
    uri = "s3://models-i5/encoders/tiny-bert"

    local = Path(resolve_base_model(uri))
    assert (local / "config.json").exists() and (local / "model.safetensors").exists()
    assert not list(local.parent.glob("*.partial-*"))
    assert load_tokenizer(uri).is_fast
    encoder = AutoModel.from_pretrained(local)
    assert encoder.config.hidden_size == 32
    model = TransformerKind(MAX_LENGTH, STRIDE).build({"base_model": uri}, {"base_model": uri})
    assert model.encoder.config.num_hidden_layers == 2

    for key in keys:  # cached: a second resolve does not download again
        boto3.client("s3").delete_object(Bucket="models-i5", Key=key)
    assert resolve_base_model(uri) == str(local) and (local / "config.json").exists()


def test_s3_prefix_without_a_model_is_a_clear_error(aws_env, tmp_path, monkeypatch):
    import boto3

    from streamguard_ml.tokens import resolve_base_model

    monkeypatch.setenv("STREAMGUARD_CACHE", str(tmp_path / "cache"))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models-i5-empty")
    with pytest.raises(ValueError, match="holds no files"):
        resolve_base_model("s3://models-i5-empty/nothing-here")
    s3.put_object(Bucket="models-i5-empty", Key="half/vocab.txt", Body=b"[PAD]\n")
    with pytest.raises(ValueError, match="no config.json"):
        resolve_base_model("s3://models-i5-empty/half")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-downloaded is left as a cached model


# -- a trained model: anomaly head, export, loading without pickle ------------------------------

@pytest.fixture(scope="module")
def archive(processed_run):
    """The transformer trained briefly through the local backend (shared with test_explain's settings)."""
    from streamguard_ml.backends import train_local

    store, run, cfg, dataset = processed_run
    small = cfg.__class__(**{**cfg.__dict__, "gnn_epochs": 3, "transformer_epochs": 1, "max_length": MAX_LENGTH,
                             "window_stride": STRIDE})
    return Path(train_local(store, run, "transformer", small, dataset_hash=dataset["content_hash"])["model_uri"])


OUT_OF_DISTRIBUTION = [
    "The quarterly report shows revenue growth across all regions. Management expects margins to improve "
    "as supply chains normalise and the new product line reaches customers in the spring.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.",
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==" * 3,
    '{"name": "widget", "price": 9.99, "tags": ["blue", "large"], "stock": {"warehouse": 12, "store": 3}}',
    "<html><head><title>Shop</title></head><body><div class='cart'><ul><li>Apples</li><li>Pears</li>"
    "</ul></div></body></html>",
    "0 0 0 0 1 1 1 1 2 2 2 2 3 3 3 3 4 4 4 4 5 5 5 5 6 6 6 6 7 7 7 7 8 8 8 8 9 9 9 9 " * 3,
]


def test_anomaly_scores_out_of_distribution_inputs_higher(archive, processed_run):
    from streamguard_ml.dataset import load_split
    from streamguard_ml.inference import LoadedModel
    from streamguard_ml.models.transformer import ANOMALY_THRESHOLD

    store, run, _, _ = processed_run
    loaded = LoadedModel.from_uri(str(archive))
    test = loaded.score(load_split(store.uri(layout.split_dir(run, "test"))))
    ood = loaded.score(loaded.featurize(OUT_OF_DISTRIBUTION))
    assert ((0 <= test.anomaly) & (test.anomaly <= 1)).all()
    print("in-distribution", np.round(np.sort(test.anomaly), 3), "out", np.round(ood.anomaly, 3))
    assert 0.2 < np.median(test.anomaly) < 0.8  # calibrated on validation: typical code scores mid-range
    # few in-distribution samples are flagged (the threshold sits at the 99th percentile of only ~35
    # validation samples, and test groups differ from validation groups, so allow a 20 % share)
    assert np.mean(test.anomaly >= ANOMALY_THRESHOLD) <= 0.2
    assert ood.anomaly.min() > np.median(test.anomaly)
    assert np.mean(ood.anomaly >= ANOMALY_THRESHOLD) >= 0.8


def test_model_archive_holds_safetensors_config_and_tokenizer(archive):
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"model.safetensors", "streamguard_model.json", "training.json", "encoder/config.json",
            "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"} <= names
    assert not [n for n in names if n.startswith(("/", "..")) or "/" in n and n.split("/")[0] not in
                {"encoder", "tokenizer"}]  # SageMaker layout: files at the archive root
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


def test_loading_and_scoring_never_unpickle(archive, monkeypatch):
    from streamguard_ml.inference import LoadedModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model file was unpickled")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = LoadedModel.from_uri(str(archive))
    scores = loaded.score(loaded.featurize(["def f(c, x):\n    c.execute('SELECT ' + x)\n"]))
    assert 0 <= scores.prob[0] <= 1 and scores.anomaly is not None


def test_evaluation_reports_anomaly_and_line_localisation(archive, processed_run, tmp_path):
    from streamguard_ml.evaluate import evaluate_model

    store, run, _, _ = processed_run
    metrics = evaluate_model(store, run, "transformer", str(archive), tmp_path, name="issue5", explain_samples=3)
    assert metrics["localisation_samples"] == 3  # vulnerable samples whose fixed lines are known
    assert 0 <= metrics["localisation_top1"] <= metrics["localisation_top3"] <= 1
    assert metrics["ig_completeness_held"] == 1.0
    assert 0 < metrics["anomaly_mean"] < 1 and 0 <= metrics["anomalous_share"] <= 0.1


def test_predict_flags_code_unlike_the_training_data(archive, processed_run, tmp_path):
    import json

    from streamguard_ml.cli import main
    from streamguard_ml.dataset import load_split
    from streamguard_ml.registry import Registry

    store, run, _, _ = processed_run
    test_codes = load_split(store.uri(layout.split_dir(run, "test"))).records["code"].tolist()[:6]
    mv = Registry(store).register("sql-intent-transformer", str(archive), {"accuracy": 0.5})
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": f"code-{i}", "code": c}) + "\n" for i, c in enumerate(test_codes))
                   + json.dumps({"id": "prose", "code": OUT_OF_DISTRIBUTION[0]}) + "\n")
    assert main(["predict", "--model", "transformer", "--model-version", str(mv.version), "--input", str(inp),
                 "--output", str(out), "--store", store.root, "--json"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    code, prose = rows[:-1], rows[-1]
    assert prose["id"] == "prose" and prose["anomalous"] is True
    assert sum(r["anomalous"] for r in code) <= 1 and all(0 <= r["anomaly"] <= 1 for r in code)
    assert prose["anomaly"] > max(r["anomaly"] for r in code if not r["anomalous"])


# -- training: resume exactly, the /opt/ml/checkpoints convention, accumulation ------------------

@pytest.fixture
def channels(processed_run, tmp_path):
    store, run, cfg, _ = processed_run
    out = {}
    for channel, split in (("train", "train"), ("validation", "val")):
        out[channel] = str(store.download_dir(layout.split_dir(run, split), tmp_path / "data" / channel))
    return out, cfg.base_model


def _train_args(channels, tmp_path: Path, name: str, *extra: str):
    from streamguard_ml.train import build_parser

    paths, base = channels
    return build_parser().parse_args(
        ["--model-type", "transformer", "--base-model", base, "--max-length", str(MAX_LENGTH),
         "--window-stride", str(STRIDE), "--batch-size", "16", "--patience", "99", "--train", paths["train"],
         "--validation", paths["validation"], "--model-dir", str(tmp_path / name / "model"), *extra])


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_resume_after_an_interruption_matches_the_uninterrupted_run(channels, tmp_path, monkeypatch):
    from streamguard_ml import train

    straight = train.train_model(_train_args(channels, tmp_path, "straight", "--epochs", "2",
                                             "--checkpoint-dir", str(tmp_path / "ckpt-straight")))

    class Interrupted(Exception):
        pass

    real_save = train.Checkpointer.save

    def save_then_die(self, *args, **kwargs):  # the spot instance goes away right after epoch 1's checkpoint
        real_save(self, *args, **kwargs)
        raise Interrupted

    args = ("--epochs", "2", "--checkpoint-dir", str(tmp_path / "ckpt"))
    monkeypatch.setattr(train.Checkpointer, "save", save_then_die)
    with pytest.raises(Interrupted):
        train.train_model(_train_args(channels, tmp_path, "resumed", *args))
    monkeypatch.setattr(train.Checkpointer, "save", real_save)
    ckpt = tmp_path / "ckpt" / "transformer"
    assert [p.name for p in ckpt.iterdir()] == ["checkpoint.safetensors"]  # one atomic file per checkpoint
    resumed = train.train_model(_train_args(channels, tmp_path, "resumed", *args))

    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["val_f1"] == b["val_f1"]
    expected, got = _weights(tmp_path / "straight" / "model"), _weights(tmp_path / "resumed" / "model")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_sagemaker_checkpoint_directory_is_the_default_when_present(tmp_path, monkeypatch):
    from streamguard_ml import train

    monkeypatch.setattr(train, "SAGEMAKER_CHECKPOINTS", str(tmp_path / "missing"))
    assert train.build_parser().parse_args(["--model-type", "gnn"]).checkpoint_dir is None
    monkeypatch.setattr(train, "SAGEMAKER_CHECKPOINTS", str(tmp_path))
    assert train.build_parser().parse_args(["--model-type", "gnn"]).checkpoint_dir == str(tmp_path)


def test_an_incomplete_accumulation_group_still_updates_the_weights(channels, tmp_path):
    """With more accumulation steps than batches, the epoch's gradients must not be dropped."""
    from streamguard_ml import train

    train.train_model(_train_args(channels, tmp_path, "accum", "--epochs", "1", "--grad-accum", "1000"))
    pretrained = _weights(Path(channels[1]))
    trained = _weights(tmp_path / "accum" / "model")
    changed = [k for k, v in pretrained.items() if not torch.equal(trained[f"encoder.{k}"], v)]
    assert changed, "the encoder is still the pretrained one: no optimizer step happened"


# -- Integrated Gradients over several windows ---------------------------------------------------

def test_ig_completeness_holds_over_overlapping_windows(archive):
    from streamguard_ml.explain import COMPLETENESS_TOLERANCE, explain_transformer
    from streamguard_ml.inference import LoadedModel

    loaded = LoadedModel.from_uri(str(archive))
    data = loaded.featurize([_long_function(8)])
    ids = data.token_ids(0)
    assert len(windows(len(ids), MAX_LENGTH - 2, STRIDE)) >= 3
    per_token, log_odds, check = explain_transformer(loaded.model, loaded.kind, ids)
    assert check["holds"] and check["relative_error"] <= COMPLETENESS_TOLERANCE, check
    assert per_token.shape == (len(ids),) and np.isfinite(log_odds)
    # Mapping windows back to tokens loses nothing (overlaps are summed, not averaged), so token and
    # line attributions add up to f(x) - f(baseline) as well.
    assert per_token.sum() == pytest.approx(check["sum_attributions"], rel=1e-4)
    assert abs(per_token.sum() - check["output_gap"]) <= COMPLETENESS_TOLERANCE * abs(check["output_gap"])
