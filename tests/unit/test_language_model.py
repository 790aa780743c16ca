"""Language modelling on a text corpus: the windows and their labels, the chronological
split, the loss and its perplexity, the n-gram baselines, the spec's refusals and the
logged model's `generate`."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from deeprig.data.corpus import (
    describe_corpus,
    language_model,
    ngram_perplexities,
    read_corpus,
    validation_start,
    windows,
)
from deeprig.data.info import DataProblem
from deeprig.models import build_model
from deeprig.spec.data import TextData
from deeprig.spec.model import TransformerConfig
from deeprig.training.evaluate import NextTokenLoss, loss_function, split_metrics
from pydantic import ValidationError

LINES = [f"def f{i}(x):\n    return x + {i}\n" for i in range(60)]


def _corpus_spec(path, **fields) -> TextData:
    fields = {
        "source": "text",
        "path": str(path),
        "text": "text",
        "task": "language_model",
        "block_size": 8,
        "tokenizer": {"kind": "byte_bpe", "vocab_size": 300, "lowercase": False},
    } | fields
    return TextData.model_validate(fields)


@pytest.fixture()
def corpus_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = tmp_path / "code.csv"
    pacsv.write_csv(pa.table({"text": LINES}), path)
    return path


def test_windows_label_each_token_with_the_next():
    inputs, labels = windows(np.arange(11), 3)
    assert inputs.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert labels.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_validation_is_the_last_rows_by_characters():
    assert validation_start([10, 10, 10, 10, 10], 0.2) == 4
    assert validation_start([100, 1, 1], 0.5) == 1  # the first row alone trains
    assert validation_start([1, 1, 100], 0.01) == 2  # at least one row validates


def test_corpus_splits_in_order_and_counts_its_windows(corpus_csv):
    spec = _corpus_spec(corpus_csv, val_fraction=0.25)
    corpus = read_corpus(spec)
    cut, total = corpus.train_rows, sum(len(line) for line in LINES)
    # the last rows holding at most a quarter of the characters, one more would be more
    assert sum(len(line) for line in LINES[cut:]) / total <= 0.25
    assert sum(len(line) for line in LINES[cut - 1 :]) / total > 0.25
    info = describe_corpus(spec)
    assert info.task == "language_model" and info.input_shape == (8,)
    assert info.num_outputs == info.vocab_size == corpus.vocab_size
    assert info.num_val == (len(corpus.val_ids) - 1) // 8
    assert info.num_rows - info.num_val == (len(corpus.train_ids) - 1) // 8
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(corpus.tokenizer_json)
    end = tokenizer.token_to_id("[EOT]")
    assert int((corpus.val_ids == end).sum()) == len(LINES) - cut  # every row, ended
    # byte-level: the text comes back whole, indentation and newlines included
    first = corpus.val_ids[: list(corpus.val_ids).index(end)]
    assert tokenizer.decode(first.tolist()) == LINES[cut]


def test_a_block_longer_than_the_validation_text_is_refused(corpus_csv):
    with pytest.raises(DataProblem, match="lower block_size") as refused:
        describe_corpus(_corpus_spec(corpus_csv, block_size=4000))
    assert refused.value.path == "data.block_size"


def test_next_token_loss_is_the_mean_per_token_summed_over_rows():
    logits, targets = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    mean = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(NextTokenLoss()(logits, targets) / 3, mean)
    assert isinstance(loss_function("language_model"), NextTokenLoss)


def test_perplexity_is_the_exponential_of_the_loss_per_token():
    uniform = torch.zeros(4, 6, 50)  # every token equally likely: perplexity = vocabulary
    loss_sum = float(NextTokenLoss()(uniform, torch.randint(0, 50, (4, 6))))
    scored = split_metrics("language_model", [loss_sum, 0.0, 4.0])
    assert scored["loss"] == pytest.approx(math.log(50))
    assert scored["perplexity"] == pytest.approx(50.0)
    assert set(split_metrics("classification", [2.0, 3.0, 4.0])) == {"loss", "accuracy"}
    assert split_metrics("regression", [4.0, 0.0, 1.0, 4.0, 3.0], (2.0,)) == {
        "loss": 4.0,
        "rmse": 4.0,
        "mae": 6.0,
    }


def test_ngram_baselines_count_the_training_stream():
    # a-b-a-b...: a bigram knows what follows; a unigram only that half are each.
    train = np.array([2, 3] * 500)
    val_prev, val_next = np.array([[2, 3, 2]]), np.array([[3, 2, 3]])
    scored = ngram_perplexities(train, val_prev, val_next, vocab_size=4)
    assert scored["unigram"] == pytest.approx(1004 / 501)  # add-one over 4 tokens
    assert 1.0 < scored["bigram"] < 1.1


def test_text_spec_refusals():
    with pytest.raises(ValidationError, match="label: required for classification"):
        TextData.model_validate({"source": "text", "path": "x.csv", "text": "t"})
    with pytest.raises(ValidationError, match="next tokens; remove it"):
        TextData.model_validate(
            {"source": "text", "path": "x.csv", "text": "t", "label": "y", "task": "language_model"}
        )


def test_the_logged_language_model_generates_and_pickles(corpus_csv):
    spec = _corpus_spec(corpus_csv)
    corpus = read_corpus(spec)
    torch.manual_seed(0)
    config = TransformerConfig(name="transformer", d_model=16, n_heads=2, causal=True)
    net = build_model(config, (8,), corpus.vocab_size, corpus.vocab_size)
    from deeprig.data.info import Fitted

    model, exportable, requirements = language_model(
        net, Fitted(tokenizer_json=corpus.tokenizer_json), spec
    )
    assert not exportable and requirements[0].startswith("tokenizers==")
    text = model.generate("def f(x):", max_new_tokens=20, temperature=0)
    assert text.startswith("def f(x):") and len(text) > len("def f(x):")
    assert model.generate("", max_new_tokens=5, seed=1)  # an empty prompt starts a text
    restored = pickle.loads(pickle.dumps(model))
    assert restored.generate("def f(x):", max_new_tokens=20, temperature=0) == text
    ids = torch.randint(1, corpus.vocab_size, (2, 8))
    assert restored(ids).shape == (2, 8, corpus.vocab_size)
