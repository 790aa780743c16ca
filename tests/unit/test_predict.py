"""deeprig predict's pure parts: the MODEL argument parsed, the input checked against the
model's columns before Ray starts (every problem named), the output's columns, the scores
of a labelled input, and the output written whole or not at all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deeprig.runners.predict import predict_spec
from deeprig.runners.predict.inputs import PredictInput
from deeprig.runners.predict.model import PredictModel
from deeprig.runners.predict.scorer import output_columns, predict_frame
from deeprig.runners.predict.scores import Scores
from deeprig.runners.predict.table_input import check_table as check_input
from deeprig.runners.predict.writer import OutputWriter, check_output
from deeprig.spec import SpecError
from deeprig.tracking.model_source import ModelRef, parse_model_ref

RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        (RUN, ModelRef(run_id=RUN)),
        (f"runs:/{RUN}/model", ModelRef(run_id=RUN)),
        (f"runs:/{RUN}/best/model", ModelRef(run_id=RUN, artifact_path="best/model")),
        ("models:/wine/3", ModelRef(registry_name="wine", version="3")),
        ("models:/wine@champion", ModelRef(registry_name="wine", alias="champion")),
        ("models:/team.wine-v2/12", ModelRef(registry_name="team.wine-v2", version="12")),
    ],
)
def test_every_form_of_model_argument_is_parsed(text, ref):
    assert parse_model_ref(text) == ref


@pytest.mark.parametrize("text", ["wine", "runs:/short/model", "models:/wine", "models:/w/x"])
def test_anything_else_is_refused_naming_the_forms(text):
    with pytest.raises(ValueError, match="models:/NAME@ALIAS"):
        parse_model_ref(text)


def classifier(columns=("a", "b"), label="kind") -> PredictModel:
    config = {"inputs": "columns", "columns": list(columns), "classes": ["cat", "dog"]}
    return PredictModel("models:/pets/1", None, config, label, "pets", {})


def spec(tmp_path, input_path, **options):
    return predict_spec("models:/pets/1", str(input_path), str(tmp_path / "out.csv"), **options)


def test_missing_columns_wrong_types_and_unknown_ids_are_named_at_once(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": ["x", "y"], "id": [1, 2]}), path)
    with pytest.raises(SpecError) as caught:
        check_input(spec(tmp_path, path, id_columns=["key"]), classifier())
    found = {(p.path, p.message) for p in caught.value.problems}
    messages = " | ".join(m for _, m in found)
    assert {p for p, _ in found} == {"input", "id_columns"}
    assert "['b'] missing" in messages and "the model reads a, b" in messages
    assert "a (string) hold no numbers" in messages and "['key']" in messages


def test_an_empty_input_is_refused(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n")
    with pytest.raises(SpecError, match="holds no rows"):
        check_input(spec(tmp_path, path), classifier())


def test_the_label_is_read_when_the_input_has_it(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,a,b,kind\n1,0.5,1,dog\n2,0.1,2,cat\n")
    table = check_input(spec(tmp_path, path, id_columns=["id"]), classifier())
    assert table.rows == 2 and table.label == "kind"
    assert list(table.columns) == ["id", "a", "b", "kind"]
    unlabelled = check_input(spec(tmp_path, path), classifier(label="colour"))
    assert unlabelled.label is None and list(unlabelled.columns) == ["a", "b"]


def test_an_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out.csv").write_text("x\n")
    with pytest.raises(SpecError, match="--overwrite"):
        check_output(spec(tmp_path, tmp_path / "in.csv"))
    check_output(spec(tmp_path, tmp_path / "in.csv", overwrite=True))


def test_an_output_folder_that_does_not_exist_is_refused(tmp_path):
    bad = predict_spec("models:/p/1", "in.csv", str(tmp_path / "nowhere" / "out.parquet"))
    with pytest.raises(SpecError, match="not a writable folder"):
        check_output(bad)


def test_output_columns_are_ids_label_prediction_then_probabilities(tmp_path):
    model = classifier()
    proba = spec(tmp_path, "in.csv", id_columns=["id"], proba=True)
    labelled = PredictInput([], {}, 1, "kind", ["id"])
    assert output_columns(model, proba, labelled) == [
        "id",
        "kind",
        "prediction",
        "proba_cat",
        "proba_dog",
    ]
    unlabelled = PredictInput([], {}, 1, None, [])
    assert output_columns(model, spec(tmp_path, "in.csv"), unlabelled) == ["prediction"]


class FixedProbabilities:
    """A pyfunc answering fixed probabilities, as deeprig's does with proba=True."""

    def predict(self, data, params=None):
        assert params == {"proba": True} and list(data.columns) == ["a", "b"]
        p = np.where(data["a"].to_numpy() > 0, 0.9, 0.2)
        return pd.DataFrame({"cat": 1 - p, "dog": p})


def test_a_batch_becomes_the_output_columns_with_class_names():
    batch = pd.DataFrame({"id": [7, 8], "a": [1.0, -1.0], "b": [0, 0], "kind": ["dog", "dog"]})
    columns = ["id", "kind", "prediction", "proba_cat", "proba_dog"]
    out = predict_frame(FixedProbabilities(), classifier(), batch[["a", "b"]], batch, columns)
    assert list(out.columns) == columns
    assert out["prediction"].tolist() == ["dog", "cat"]
    np.testing.assert_allclose(out["proba_dog"], [0.9, 0.2])


def test_scores_of_a_labelled_input_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.choice(["cat", "dog"], 300)
    probabilities = rng.dirichlet([1, 1], 300)
    predicted = np.array(["cat", "dog"])[probabilities.argmax(1)]
    scores = Scores(["cat", "dog"])
    for start in range(0, 300, 64):  # batch by batch, as the rows stream
        part = slice(start, start + 64)
        scores.add(labels[part].tolist(), predicted[part], probabilities[part])
    metrics, confusion = scores.compute()
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["f1_macro"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels == "dog", probabilities[:, 1]))
    assert np.sum(confusion) == 300


def test_regression_scores_are_rmse_and_mae():
    scores = Scores(None)
    scores.add([1.0, 2.0], np.array([2.0, 2.0]), None)
    scores.add([0.0], np.array([-1.0]), None)
    metrics, confusion = scores.compute()
    assert confusion is None
    assert metrics == pytest.approx({"rmse": np.sqrt(2 / 3), "mae": 2 / 3})


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_the_output_appears_whole_under_its_name_or_not_at_all(tmp_path, name):
    batch = pa.table({"id": [1, 2], "prediction": ["cat", "dog"]})
    with OutputWriter(str(tmp_path / name)) as writer:
        writer.write(batch)
        writer.write(batch)
        assert not (tmp_path / name).exists()  # (a temporary name until complete)
    read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
    assert read(tmp_path / name)["prediction"].tolist() == ["cat", "dog"] * 2
    with pytest.raises(KeyboardInterrupt), OutputWriter(str(tmp_path / "cut.csv")) as writer:
        writer.write(batch)
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no partial file left


def test_import_deeprig_stays_light_with_its_python_entries():
    import subprocess
    import sys

    script = (
        "import sys, deeprig; "
        "assert callable(deeprig.run) and callable(deeprig.predict); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow', 'torch', "
        "'pandas', 'pyarrow'}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_deeprig_run_refuses_a_bad_spec_dict_before_anything_starts():
    import deeprig

    with pytest.raises(SpecError) as caught:
        deeprig.run({"name": "x", "kind": "predict", "model": "m"}, **{"workers": 0})
    paths = {p.path for p in caught.value.problems}
    assert {"input", "output", "workers"} <= paths
