"""Classification scores held to scikit-learn's, the text model's padding masked, image
augmentation on batches, and the logged model reading raw inputs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from deeprig.models import InputShapeError, build_model, check_input_shape
from deeprig.models.rnn import RecurrentNet
from deeprig.models.wrappers import SeriesForecaster, Standardized, TextClassifier
from deeprig.spec.data import AugmentSpec
from deeprig.spec.model import MLPConfig, RNNConfig
from deeprig.training.augment import image_augment, random_crop
from deeprig.training.scores import ClassScores, macro_f1, roc_auc
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_and_confusion_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 5))  # class 4 is predicted but never a label
    scores = ClassScores(5, torch.device("cpu"))
    for part in np.array_split(np.arange(200), 3):
        scores.update(torch.from_numpy(logits[part]), torch.from_numpy(labels[part]))
    metrics, confusion = scores.compute(world_size=1)
    predicted = logits.argmax(axis=1)
    assert metrics["f1_macro"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert confusion == confusion_matrix(labels, predicted, labels=range(5)).tolist()
    assert "auc" not in metrics  # only for two classes


def test_roc_auc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # coarse: many ties
    ours = roc_auc(torch.from_numpy(scores), torch.from_numpy(labels))
    assert ours == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc(torch.ones(3), torch.zeros(3, dtype=torch.long)) is None  # one class


def test_two_class_scores_report_auc():
    scores = ClassScores(2, torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.5], [0.2, 0.1]])
    scores.update(logits, torch.tensor([0, 1, 1, 0]))
    metrics, _ = scores.compute(world_size=1)
    expected = roc_auc_score([0, 1, 1, 0], logits.softmax(dim=1)[:, 1].numpy())
    assert metrics["auc"] == pytest.approx(expected)


def test_macro_f1_of_a_perfect_and_an_empty_matrix():
    assert macro_f1(torch.eye(3, dtype=torch.long) * 5) == 1.0
    assert macro_f1(torch.zeros(3, 3, dtype=torch.long)) == 0.0


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_text_padding_changes_nothing(cell, pooling):
    torch.manual_seed(0)
    net = RecurrentNet(cell, (10,), 3, 8, 2, True, 0.0, vocab_size=50, pooling=pooling).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 2, 1, 11]])
    shorter = RecurrentNet(cell, (4,), 3, 8, 2, True, 0.0, vocab_size=50, pooling=pooling)
    shorter.load_state_dict(net.state_dict())
    with torch.no_grad():
        padded = net(ids)[0]
        unpadded = shorter.eval()(torch.tensor([[5, 6, 7, 0]]))[0]
    assert torch.allclose(padded, unpadded, atol=1e-6)  # 7 pads or 1: the same logits


def test_text_needs_a_model_that_embeds_tokens():
    with pytest.raises(InputShapeError, match="use lstm or gru"):
        check_input_shape(MLPConfig(name="mlp"), (16,), vocab_size=100)
    check_input_shape(RNNConfig(name="gru"), (16,), vocab_size=100)
    net = build_model(RNNConfig(name="gru", embedding_dim=5), (16,), 2, vocab_size=100)
    assert net(torch.randint(0, 100, (3, 16))).shape == (3, 2)


def test_augmentation_flips_and_crops_whole_batches_reproducibly():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    augment = image_augment(AugmentSpec(flip=True, crop_padding=1))
    assert augment is not None and image_augment(AugmentSpec()) is None
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    assert torch.equal(first, augment(images)) and first.shape == images.shape
    torch.manual_seed(0)
    shifted = random_crop(images, 2)
    # every crop is a window of the zero-padded image: its values are the image's or 0
    assert set(shifted.unique().tolist()) <= set(images.unique().tolist()) | {0.0}


def test_the_standardized_model_reads_raw_inputs():
    net = torch.nn.Linear(3, 2)
    mean, std = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 2.0, 4.0]])
    x = torch.randn(5, 3)
    assert torch.allclose(Standardized(net, mean, std)(x), net((x - mean) / std))


def test_the_series_forecaster_adds_the_change_to_the_last_value():
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 1), 0.5)

    zero, one = torch.zeros(1, 1), torch.ones(1, 1)
    forecaster = SeriesForecaster(Constant(), zero, one, zero[0], 4 * one[0], True, 0)
    window = torch.tensor([[[10.0], [11.0], [12.0]]])
    assert forecaster(window).item() == pytest.approx(12.0 + 0.5 * 4.0)


def test_the_text_classifier_pickles_and_predicts_names_from_sentences():
    from deeprig.data.tokenizer import train_tokenizer
    from deeprig.spec.data import TokenizerSpec

    tokenizer = train_tokenizer(["good great", "bad awful"] * 5, TokenizerSpec(max_length=4))
    net = RecurrentNet("gru", (4,), 2, 4, vocab_size=20)
    model = pickle.loads(pickle.dumps(TextClassifier(net, tokenizer.to_str(), ["neg", "pos"])))
    assert model.tokenize(["good great", "unknown words here too"]).shape == (2, 4)
    assert set(model.predict(["good great", "bad"])) <= {"neg", "pos"}
