"""A language-model job end to end on a real local Ray and MLflow store: a causal
transformer over a small code corpus, its perplexity beside the n-gram baselines, and the
logged model continuing a prompt."""

from __future__ import annotations

import math
import random

import mlflow
import mlflow.pytorch
import pytest
import yaml

from tests.integration.conftest import run_in_fresh_home

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


@pytest.fixture(scope="module")
def lm_job(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder = tmp_path_factory.mktemp("corpus")
    # Each row names one of 8 fruits twice: a bigram cannot know the second from the token
    # before it (perplexity ~8^(2/10) per row of ~10 tokens), a model reading the row can
    # copy it (~8^(1/10)).
    rng = random.Random(0)
    fruits = ["apple", "berry", "cherry", "grape", "lemon", "mango", "olive", "peach"]
    texts = []
    for _ in range(300):
        fruit = rng.choice(fruits)
        texts.append(f"def keep(x, {fruit}):\n    return {fruit}\n")
    pacsv.write_csv(pa.table({"text": texts}), folder / "code.csv")
    spec = {
        "name": "tiny-lm",
        "kind": "train",
        "model": {"name": "transformer", "d_model": 32, "n_heads": 2, "causal": True},
        "data": {
            "source": "text",
            "path": str(folder / "code.csv"),
            "text": "text",
            "task": "language_model",
            "block_size": 16,
            "tokenizer": {"kind": "byte_bpe", "vocab_size": 300, "lowercase": False},
        },
        "optim": {"lr": 0.01, "batch_size": 32, "num_epochs": 8},
    }
    path = folder / "tiny-lm.yaml"
    path.write_text(yaml.safe_dump(spec))
    result, client = run_in_fresh_home(tmp_path_factory, "lm", str(path))
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-lm").experiment_id])
    return client, run


def test_a_causal_transformer_beats_its_ngram_baselines(lm_job):
    _, run = lm_job
    metrics = run.data.metrics
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-6)
    assert metrics["val_perplexity"] < metrics["val_perplexity_bigram"]
    assert metrics["val_perplexity_bigram"] < metrics["val_perplexity_unigram"]
    # A sample is a 16-token window; its transformer's forward reads its padding, so its
    # FLOPs are counted over real rows.
    assert metrics["tokens_per_s"] == pytest.approx(16 * metrics["samples_per_s"])
    assert 0 < metrics["mfu"] < 1


def test_the_logged_language_model_continues_a_prompt(lm_job):
    client, run = lm_job
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    prompt = "def keep(x, mango):\n    return"
    # (greedy: the fruit its row named before, copied)
    assert model.generate(prompt, max_new_tokens=3, temperature=0).startswith(prompt + " mango")
    assert run.data.tags["deeprig.model_format"] == "pickle"
