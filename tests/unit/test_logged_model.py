"""The logged model as a plain script meets it (no Ray: a checkpoint's state logged into a
store of the test's own): `mlflow.pyfunc.load_model(uri).predict(frame)` on a table read
from CSV picks the columns by name and answers class names, or probabilities with
`params={"proba": True}`, without importing deeprig; and the python source's tables are
standardised as Parquet's are."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from deeprig.data.info import Fitted
from deeprig.data.pipeline import BuildOptions
from deeprig.data.python import describe_python, python_datasets
from deeprig.models import build_model
from deeprig.runners.train_record import log_trained_model, model_interface
from deeprig.spec.data import PythonData
from deeprig.spec.train import TrainSpec
from deeprig.training.state import TrainState

COLUMNS = ["alcohol", "magnesium", "hue"]


def raw_table(rows: int = 200) -> pd.DataFrame:
    """A data function: raw columns on very different scales (magnesium ~100, hue ~1)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "alcohol": rng.normal(13.0, 0.8, rows),
            "magnesium": rng.integers(70, 160, rows),
            "hue": rng.normal(1.0, 0.2, rows),
        }
    )
    frame["kind"] = (frame["alcohol"] > 13.0).astype("int64")
    return frame


def raw_arrays() -> tuple[np.ndarray, np.ndarray]:
    frame = raw_table()
    return frame[COLUMNS].to_numpy(np.float32), frame["kind"].to_numpy()


def python_spec(**fields) -> PythonData:
    return PythonData.model_validate({"source": "python", "val_fraction": 0.25, **fields})


def split(spec: PythonData):
    prepared = python_datasets(spec, describe_python(spec), BuildOptions(0, 1, 0.5))
    assert prepared.arrays is not None
    return prepared, prepared.arrays["train"][0], prepared.arrays["val"][0]


TABLE = {"target": f"{__name__}:raw_table", "features": COLUMNS, "label": "kind"}


def test_a_python_table_is_standardised_with_its_training_splits_statistics():
    prepared, train, val = split(python_spec(**TABLE))
    fitted = prepared.fitted
    assert fitted.fitted_on_rows == len(train) == 150 and fitted.stats_shape == (3,)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-4)
    raw = raw_table()[COLUMNS].to_numpy()
    assert 100 < fitted.input_mean[1] < 130 and fitted.input_std[1] > 10  # magnesium, raw
    # validation rows are scaled by the training rows' statistics, not their own
    assert any(np.allclose(row, (val[0] * fitted.input_std) + fitted.input_mean) for row in raw)
    assert not np.allclose(val.mean(axis=0), 0.0, atol=1e-6)


def test_standardize_false_and_arrays_keep_the_values_as_given():
    _, kept, _ = split(python_spec(**TABLE, standardize=False))
    assert kept[:, 1].max() > 100  # magnesium as it was
    prepared, arrays, _ = split(python_spec(target=f"{__name__}:raw_arrays"))
    assert prepared.fitted.input_mean is None and arrays[:, 1].max() > 100


def table_state(data: dict, task: str = "classification", classes=("dry", "sweet")) -> TrainState:
    """A trained-looking checkpoint of an MLP on three raw columns, standardised."""
    spec = TrainSpec.model_validate(
        {"name": "wine", "kind": "train", "model": {"name": "mlp", "hidden": [8]}, "data": data}
    )
    torch.manual_seed(0)
    outputs = len(classes) if task == "classification" else 1
    assert spec.model is not None
    net = build_model(spec.model, (3,), outputs, None)
    fitted = Fitted((13.0, 110.0, 1.0), (0.8, 25.0, 0.2), (3,), fitted_on_rows=150)
    return TrainState(
        model=net.state_dict(),
        optimizer={},
        scheduler={},
        scaler={},
        epoch=0,
        metrics={},
        spec=spec.model_dump(mode="json"),
        input_shape=(3,),
        num_outputs=outputs,
        task=task,
        run_id=None,
        classes=tuple(classes) if task == "classification" else None,
        fitted=dataclasses.asdict(fitted),
    )


@pytest.mark.parametrize(
    ("data", "task", "inputs", "classes"),
    [
        ({"source": "python", **TABLE}, "classification", "columns", ("dry", "sweet")),
        ({"source": "python", **TABLE}, "regression", "columns", None),
        ({"source": "python", "target": "m:f"}, "classification", "tensor", ("dry", "sweet")),
        (
            {"source": "parquet", "path": "p", "features": ["pixels"], "label": "y"},
            "classification",
            "tensor",
            ("dry", "sweet"),
        ),
    ],
)
def test_the_pyfunc_reads_named_columns_only_where_each_is_one_value(data, task, inputs, classes):
    interface = model_interface(table_state(data, task))
    assert interface.inputs == inputs and interface.classes == classes
    signature = interface.signature()
    assert signature.params is None if classes is None else signature.params is not None
    if inputs == "columns":
        assert signature.inputs.input_names() == COLUMNS


def test_the_logged_table_model_scores_a_csv_in_a_plain_script(mlflow_client, tmp_path):
    from deeprig.tracking.runs import RunRecorder, ensure_experiment
    from deeprig.tracking.store import embedded_target

    target = embedded_target(tmp_path / "deeprig-home")
    run = mlflow_client.create_run(ensure_experiment(mlflow_client, target, "wine"))
    state = table_state({"source": "python", **TABLE})
    log_trained_model(RunRecorder(target, run.info.run_id), state, None)
    assert mlflow_client.get_run(run.info.run_id).data.tags["deeprig.model_format"] == "pt2"

    csv = tmp_path / "new_wines.csv"  # another column order, an extra column, whole numbers
    csv.write_text("hue,id,magnesium,alcohol\n1.1,a,100,12.1\n0.7,b,150,14.2\n1.0,c,95,13.4\n")
    script = textwrap.dedent(
        f"""
        import json, sys
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({target.uri!r})
        model = mlflow.pyfunc.load_model("runs:/{run.info.run_id}/model")
        frame = pd.read_csv({str(csv)!r})
        names = model.predict(frame).tolist()
        proba = model.predict(frame, params={{"proba": True}})
        print(json.dumps({{
            "names": names,
            "proba": proba.to_dict(orient="list"),
            "deeprig": sorted(m for m in sys.modules if m.startswith("deeprig")),
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["deeprig"] == []  # the model's own loader, not deeprig's package

    net = state.rebuild_model().eval()
    raw = torch.tensor([[12.1, 100, 1.1], [14.2, 150, 0.7], [13.4, 95, 1.0]])
    scaled = (raw - torch.tensor([13.0, 110.0, 1.0])) / torch.tensor([0.8, 25.0, 0.2])
    expected = net(scaled).softmax(dim=1).detach().numpy()
    assert set(answer["proba"]) == {"dry", "sweet"}
    np.testing.assert_allclose(answer["proba"]["dry"], expected[:, 0], rtol=1e-4)
    np.testing.assert_allclose(answer["proba"]["sweet"], expected[:, 1], rtol=1e-4)
    assert answer["names"] == [["dry", "sweet"][i] for i in expected.argmax(axis=1)]

    # What a predict actor scores with (the pyfunc's own scorer, the batch not checked
    # again against the signature): the plain script's answers.
    from deeprig.tracking.model_source import load_scorer

    config = model_interface(state).config()
    scorer = load_scorer(f"runs:/{run.info.run_id}/model", target.uri, config)
    frame = pd.read_csv(csv)
    assert scorer.predict(frame).tolist() == answer["names"]
    proba = scorer.predict(frame, params={"proba": True})
    np.testing.assert_allclose(proba["dry"], answer["proba"]["dry"], rtol=1e-6)
