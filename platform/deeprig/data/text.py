"""Text in CSV or Parquet: a Hugging Face `tokenizers` tokenizer trained on the training
split only. Labelled text (classification): every text encoded to `max_length` token ids
(padded with id 0, truncated), labels mapped to class ids. A corpus (language_model):
data/corpus.py. The tokenizer travels in `Fitted` into the checkpoint and the logged
model, which then reads raw text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deeprig.data.arrow import label_classes
from deeprig.data.builtin import split_indices
from deeprig.data.info import DataInfo, DataProblem, Fitted, num_val_rows
from deeprig.data.parquet import read_table
from deeprig.data.tokenizer import text_column, train_tokenizer
from deeprig.spec.data import TextData

if TYPE_CHECKING:
    from torch import nn


def describe_text(spec: TextData) -> DataInfo:
    if spec.task == "language_model":
        from deeprig.data.corpus import describe_corpus

        return describe_corpus(spec)
    assert spec.label is not None  # (the spec requires one for classification)
    table = read_table(spec.path, [spec.text, spec.label])
    text_column(table, spec.text)
    classes = label_classes(table.column(spec.label), "data.label")
    num_rows = table.num_rows
    if num_rows < 2:
        raise DataProblem("data.path", f"need at least 2 rows, found {num_rows}")
    return DataInfo(
        (spec.tokenizer.max_length,),
        "classification",
        len(classes),
        num_rows,
        num_val_rows(num_rows, spec.val_fraction),
        input_dtype="int64",
        vocab_size=spec.tokenizer.vocab_size,
        classes=classes,
    )


def encode(tokenizer, texts: list[str]) -> np.ndarray:
    """(rows, max_length) token ids."""
    return np.array([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)


def text_arrays(spec: TextData, info: DataInfo, seed: int):
    """((train x, y), (val x, y), Fitted): token ids and class ids, split as built-in data
    is; the tokenizer learned from the training texts only (a corpus: its windows)."""
    if spec.task == "language_model":
        from deeprig.data.corpus import corpus_arrays

        return corpus_arrays(spec)
    assert spec.label is not None  # (the spec requires one for classification)
    table = read_table(spec.path, [spec.text, spec.label])
    texts = [t or "" for t in table.column(spec.text).to_pylist()]
    class_ids = {name: i for i, name in enumerate(info.class_names())}
    labels = np.array([class_ids[str(v)] for v in table.column(spec.label).to_pylist()])
    train_idx, val_idx = split_indices(len(texts), spec.val_fraction, seed)
    tokenizer = train_tokenizer([texts[i] for i in train_idx], spec.tokenizer)
    ids = encode(tokenizer, texts)
    fitted = Fitted(tokenizer_json=tokenizer.to_str(), fitted_on_rows=len(train_idx))
    return (ids[train_idx], labels[train_idx]), (ids[val_idx], labels[val_idx]), fitted


def text_samples(spec: TextData, info: DataInfo, count: int) -> np.ndarray:
    """The first texts as token ids, by a tokenizer trained on the first 1000 (a corpus:
    its first windows)."""
    if spec.task == "language_model":
        from deeprig.data.corpus import read_corpus, windows

        return windows(read_corpus(spec).train_ids, spec.block_size)[0][:count]
    texts = read_table(spec.path, [spec.text]).column(spec.text).to_pylist()[:1000]
    tokenizer = train_tokenizer([t or "" for t in texts], spec.tokenizer)
    return encode(tokenizer, [t or "" for t in texts[:count]])


def text_model(
    net: nn.Module, fitted: Fitted, spec: TextData, classes: list[str]
) -> tuple[nn.Module, bool, list[str]]:
    """The classifier behind its tokenizer, reading sentences (`predict`): pickled, since
    torch.export keeps `forward` only, and it needs the `tokenizers` package. A language
    model: the network behind its tokenizer, continuing text (`generate`)."""
    if spec.task == "language_model":
        from deeprig.data.corpus import language_model

        return language_model(net, fitted, spec)
    import tokenizers

    from deeprig.models.wrappers import TextClassifier

    assert fitted.tokenizer_json is not None  # (every text job trains one)
    model = TextClassifier(net, fitted.tokenizer_json, classes)
    return model, False, [f"tokenizers=={tokenizers.__version__}"]
