"""The model registry: names match the spec, shapes are inferred, no Ray/MLflow inside."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from deeprig.models import ARCHITECTURES, InputShapeError, build_model, check_input_shape
from deeprig.models.transformer import TransformerBlock
from deeprig.spec.model import (
    MODEL_CONFIGS,
    CNNConfig,
    CustomModelConfig,
    MLPConfig,
    RNNConfig,
    TransformerConfig,
)
from pydantic import ValidationError


def test_every_model_of_the_spec_has_an_architecture():
    # The spec's model union is the truth: a config class added there without an entry in
    # the registry would crash `validate`, so this fails first.
    assert set(ARCHITECTURES) == set(MODEL_CONFIGS)
    assert len(MODEL_CONFIGS) == 5  # mlp, cnn, lstm|gru, transformer, custom


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        (MLPConfig(name="mlp"), (64,)),
        (MLPConfig(name="mlp"), (8, 8)),
        (CNNConfig(name="cnn"), (8, 8)),
        (CNNConfig(name="cnn", channels=[4, 8, 8]), (3, 32, 32)),
        (RNNConfig(name="lstm"), (8, 8)),
        (RNNConfig(name="gru", num_layers=2, bidirectional=True, dropout=0.1), (8, 8)),
        (RNNConfig(name="lstm"), (20,)),
    ],
)
def test_models_map_samples_to_outputs(config, shape):
    model = build_model(config, shape, 10)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 10)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_cnn_refuses_flat_samples_with_the_fix():
    with pytest.raises(InputShapeError, match="data.feature_shape"):
        check_input_shape(CNNConfig(name="cnn"), (64,))


def test_model_files_import_neither_ray_nor_mlflow():
    code = (
        "import sys, deeprig.models;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- transformer


def _transformer(shape=(12,), outputs=3, vocab=50, **fields) -> torch.nn.Module:
    config = TransformerConfig(name="transformer", d_model=16, n_heads=2, **fields)
    return build_model(config, shape, outputs, vocab_size=vocab).eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_transformer_classifies_token_ids(pooling, positions):
    model = _transformer(pooling=pooling, positions=positions).train()
    ids = torch.randint(1, 50, (4, 12))
    out = model(ids)
    assert out.shape == (4, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("shape", [(24, 3), (24,)])
def test_transformer_reads_time_steps(shape):
    model = _transformer(shape, outputs=1, vocab=None, pooling="mean")
    assert model(torch.randn(5, *shape)).shape == (5, 1)


def test_causal_transformer_predicts_every_position_from_the_past_only():
    torch.manual_seed(0)
    model = _transformer(outputs=50, causal=True)
    ids = torch.randint(1, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(1, 50, (2, 5))  # tokens after position 6 differ
    out, out_changed = model(ids), model(changed)
    assert out.shape == (2, 12, 50)
    assert torch.allclose(out[:, :7], out_changed[:, :7], atol=1e-6)
    assert not torch.allclose(out[:, 7:], out_changed[:, 7:])  # (it does read them)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformer_ignores_padding(pooling):
    # The same text padded to 12 and to 8 tokens, read by the same weights: the same
    # output, so neither attention nor pooling reads a pad.
    torch.manual_seed(0)
    model = _transformer((12,), pooling=pooling, max_length=13)
    shorter = _transformer((8,), pooling=pooling, max_length=13)
    shorter.load_state_dict(model.state_dict())
    ids = torch.zeros(2, 12, dtype=torch.long)
    ids[0, :5] = torch.tensor([3, 9, 4, 7, 2])
    ids[1, :8] = torch.tensor([5, 1, 8, 8, 6, 2, 4, 9])
    before = model(ids)
    assert torch.allclose(before, shorter(ids[:, :8]), atol=1e-5)
    ids[0, 5] = 11  # a real token where a pad was: read
    assert not torch.allclose(model(ids)[0], before[0], atol=1e-5)


def test_transformer_refusals_name_the_field_and_the_fix():
    with pytest.raises(ValidationError, match="n_heads"):
        TransformerConfig(name="transformer", d_model=10, n_heads=4)
    config = TransformerConfig(name="transformer", max_length=12)
    with pytest.raises(InputShapeError, match="raise it to 13") as short:
        check_input_shape(config, (12,), vocab_size=100)  # [CLS] needs one more
    assert short.value.field == "model.max_length"
    with pytest.raises(InputShapeError, match="causal: true") as not_causal:
        check_input_shape(config, (8,), vocab_size=100, task="language_model")
    assert not_causal.value.field == "model.causal"
    causal = TransformerConfig(name="transformer", causal=True)
    with pytest.raises(InputShapeError, match="set causal: false"):
        check_input_shape(causal, (8,), vocab_size=100, task="classification")
    with pytest.raises(InputShapeError, match="transformer, causal: true") as rnn:
        check_input_shape(RNNConfig(name="gru"), (8,), vocab_size=100, task="language_model")
    assert rnn.value.field == "model.name"
    check_input_shape(causal, (8,), vocab_size=100, task="language_model")


def test_every_built_in_family_names_its_fsdp_units():
    # What `scaling.fsdp.shard: auto` wraps: classes the built network really holds.
    for config, shape, vocab in [
        (MLPConfig(name="mlp"), (8, 8), None),
        (CNNConfig(name="cnn"), (8, 8), None),
        (RNNConfig(name="gru"), (8, 8), None),
        (TransformerConfig(name="transformer"), (12,), 50),
    ]:
        units = ARCHITECTURES[type(config)].shard_units
        assert units is not None
        net = build_model(config, shape, 3, vocab_size=vocab)
        for unit in units:
            assert any(isinstance(m, unit) for m in net.modules()), (config.name, unit)
    transformer = build_model(TransformerConfig(name="transformer", n_layers=3), (12,), 3, 50)
    assert sum(isinstance(m, TransformerBlock) for m in transformer.modules()) == 3
    assert ARCHITECTURES[CustomModelConfig].shard_units is None
