"""The model registry: names match the spec, shapes are inferred, no Ray/MLflow inside."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from deeprig.models import ARCHITECTURES, InputShapeError, build_model, check_input_shape
from deeprig.spec.train import MODEL_CONFIGS, CNNConfig, MLPConfig, RNNConfig


def test_every_model_of_the_spec_has_an_architecture():
    # The spec's model union is the truth: a config class added there without an entry in
    # the registry would crash `validate`, so this fails first.
    assert set(ARCHITECTURES) == set(MODEL_CONFIGS)
    assert len(MODEL_CONFIGS) == 4  # mlp, cnn, lstm|gru, custom


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
