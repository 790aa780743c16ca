"""A text corpus for language modelling (`data: {source: text, task: language_model}`).

The rows, in order, are one corpus: its last rows holding `val_fraction` of the characters
validate (a chronological split of whole rows: nothing of the validation text is seen in
training, the tokenizer's training included). Each split is one stream of token ids, rows
joined by an end-of-text token, cut into windows of `block_size` tokens whose labels are
the same tokens one position on. A unigram and a bigram model counted on the training
stream score the validation tokens the network is scored on: the baselines its
perplexity is read against."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deeprig.data.info import DataInfo, DataProblem, Fitted
from deeprig.spec.data import TextData

if TYPE_CHECKING:
    from torch import nn

END_OF_TEXT = "[EOT]"  # between rows: a document ends, the next begins
# How far the bigram leans on the unigram where a context was seen rarely: the candidates
# its smoothing is chosen from.
BIGRAM_MUS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


@dataclass(frozen=True)
class Corpus:
    train_ids: np.ndarray  # the training rows' token ids, each row ended by END_OF_TEXT
    val_ids: np.ndarray
    tokenizer_json: str
    vocab_size: int
    train_rows: int


@functools.lru_cache(maxsize=4)
def read_corpus(spec: TextData) -> Corpus:
    """The corpus split, its tokenizer trained on the training rows and both splits
    encoded. Cached: describing the data and building its splits read it once."""
    from deeprig.data.parquet import read_table
    from deeprig.data.tokenizer import text_column, train_tokenizer

    column = text_column(read_table(spec.path, [spec.text]), spec.text)
    texts = [t for t in column.to_pylist() if t]
    if len(texts) < 2:
        raise DataProblem(
            "data.path",
            f"need at least 2 non-empty texts (the last ones validate), found {len(texts)}",
        )
    cut = validation_start([len(t) for t in texts], spec.val_fraction)
    tokenizer = train_tokenizer(texts[:cut], spec.tokenizer, fixed_length=False, ends=END_OF_TEXT)
    end = tokenizer.token_to_id(END_OF_TEXT)
    return Corpus(
        token_stream(tokenizer, texts[:cut], end),
        token_stream(tokenizer, texts[cut:], end),
        tokenizer.to_str(),
        tokenizer.get_vocab_size(),
        cut,
    )


def validation_start(lengths: list[int], val_fraction: float) -> int:
    """The first validation row: the last rows hold about `val_fraction` of the characters,
    each split at least one row."""
    training_share = np.cumsum(lengths) / max(sum(lengths), 1)
    first = int(np.searchsorted(training_share, 1.0 - val_fraction)) + 1
    return min(max(first, 1), len(lengths) - 1)


def token_stream(tokenizer, texts: list[str], end: int) -> np.ndarray:
    """The texts' token ids in one stream, each text followed by `end`."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids += encoding.ids
        ids.append(end)
    return np.asarray(ids, dtype=np.int64)


def windows(ids: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels), both (windows, block_size): non-overlapping windows of the stream,
    each label the token that follows its input."""
    count = (len(ids) - 1) // block_size
    inputs = ids[: count * block_size].reshape(count, block_size)
    labels = ids[1 : count * block_size + 1].reshape(count, block_size)
    return inputs, labels


def describe_corpus(spec: TextData) -> DataInfo:
    corpus = read_corpus(spec)
    size = spec.block_size
    num_train, num_val = ((len(ids) - 1) // size for ids in (corpus.train_ids, corpus.val_ids))
    for split, count, ids in (
        ("training", num_train, corpus.train_ids),
        ("validation", num_val, corpus.val_ids),
    ):
        if count < 1:
            raise DataProblem(
                "data.block_size",
                f"the {split} text holds {len(ids)} tokens, less than one window of "
                f"block_size {size} (+1); lower block_size or give the split more text "
                "(data.val_fraction)",
            )
    return DataInfo(
        (size,),
        "language_model",
        corpus.vocab_size,  # one logit per token of the vocabulary, at every position
        num_train + num_val,
        num_val,
        input_dtype="int64",
        vocab_size=corpus.vocab_size,
    )


def corpus_arrays(spec: TextData):
    """((train x, y), (val x, y), Fitted): windows of both splits; the tokenizer and the
    n-gram baselines' validation perplexities in `Fitted`."""
    corpus = read_corpus(spec)
    train = windows(corpus.train_ids, spec.block_size)
    val = windows(corpus.val_ids, spec.block_size)
    baselines = ngram_perplexities(corpus.train_ids, val[0], val[1], corpus.vocab_size)
    fitted = Fitted(
        tokenizer_json=corpus.tokenizer_json,
        baseline=tuple((f"val_perplexity_{name}", value) for name, value in baselines.items()),
        fitted_on_rows=corpus.train_rows,
    )
    return train, val, fitted


def ngram_perplexities(
    train_ids: np.ndarray, previous: np.ndarray, labels: np.ndarray, vocab_size: int
) -> dict[str, float]:
    """Validation perplexity of a unigram and a bigram model counted on `train_ids`, on the
    `labels` tokens (each after its `previous` token). The unigram is add-one smoothed;
    the bigram leans on the unigram where a context is rare, by as much (BIGRAM_MUS) as
    scores best on the training stream's last tenth when counted on the rest."""
    held_out = len(train_ids) - max(2, len(train_ids) // 10)
    fit, check = train_ids[:held_out], train_ids[held_out - 1 :]
    best_mu = min(
        BIGRAM_MUS,
        key=lambda mu: -_bigram_log_probs(fit, check[:-1], check[1:], vocab_size, mu).mean(),
    )
    prev, label = previous.reshape(-1), labels.reshape(-1)
    bigram = _bigram_log_probs(train_ids, prev, label, vocab_size, best_mu)
    return {
        "unigram": math.exp(-float(np.log(_unigram(train_ids, vocab_size)[label]).mean())),
        "bigram": math.exp(-float(bigram.mean())),
    }


def _unigram(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + vocab_size)


def _bigram_log_probs(
    ids: np.ndarray, previous: np.ndarray, labels: np.ndarray, vocab_size: int, mu: float
) -> np.ndarray:
    """log p(label | previous) counted on `ids`: (count(s, t) + mu p(t)) / (count(s) + mu),
    Dirichlet smoothing towards the unigram p."""
    pairs = ids[:-1] * vocab_size + ids[1:]
    seen, pair_counts = np.unique(pairs, return_counts=True)
    context_counts = np.bincount(ids[:-1], minlength=vocab_size).astype(np.float64)
    asked = previous * vocab_size + labels
    where = np.clip(np.searchsorted(seen, asked), 0, len(seen) - 1)
    pair = np.where(seen[where] == asked, pair_counts[where], 0).astype(np.float64)
    unigram = _unigram(ids, vocab_size)
    return np.log((pair + mu * unigram[labels]) / (context_counts[previous] + mu))


def language_model(
    net: nn.Module, fitted: Fitted, spec: TextData
) -> tuple[nn.Module, bool, list[str]]:
    """The network behind its tokenizer, continuing text (`generate`): pickled, since
    torch.export keeps `forward` only, and it needs the `tokenizers` package."""
    import tokenizers

    from deeprig.models.wrappers import LanguageModel

    assert fitted.tokenizer_json is not None  # (every text job trains one)
    model = LanguageModel(net, fitted.tokenizer_json, spec.block_size, END_OF_TEXT)
    return model, False, [f"tokenizers=={tokenizers.__version__}"]
