"""predict's stream, without Ray: the input split into blocks so every actor has work, the
actors' stamps turned into where the time went and the steady rows/s, a series' true
values at each step forecast, its columns and their scores, and every "bad input" of a predict job
refused with exit 2 before Ray starts, with no run left in the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deeprig.runners.predict import predict_spec
from deeprig.runners.predict.inputs import MAX_BLOCK_BATCHES, block_rows
from deeprig.runners.predict.model import PredictModel
from deeprig.runners.predict.scorer import output_columns, predict_frame
from deeprig.runners.predict.scores import Scores
from deeprig.runners.predict.series_input import ACTUAL, ROW, check_series, series_windows
from deeprig.runners.predict.timing import ActorClock, StreamTiming
from deeprig.spec import SpecError
from deeprig.spec.data import TimeseriesData

from tests.conftest import embedded_store_client


@pytest.mark.parametrize(
    ("rows", "workers", "batch"),
    [(1_000_000, 2, 256), (1_000_000, 2, 4096), (10_000, 1, 256), (10_000, 2, 256), (300, 4, 64)],
)
def test_a_stream_is_cut_in_whole_batches_several_for_each_actor(rows, workers, batch):
    size = block_rows(rows, workers, batch)
    blocks = -(-rows // size)
    assert size % batch == 0 and size <= MAX_BLOCK_BATCHES * batch
    # every actor gets several blocks, unless the input is only a few batches long
    assert blocks >= min(4 * workers, -(-rows // batch))


def test_a_block_is_at_least_one_batch():
    assert block_rows(10, 2, 256) == 256


def stamped(actor: ActorClock, rows: int, done_at: float) -> pa.Table:
    frame = actor.stamp(pd.DataFrame({"prediction": np.zeros(rows)}), 0.25, 0.5)
    frame["_timing_done_at"] = done_at
    return pa.Table.from_pandas(frame, preserve_index=False)


# What two actors' stamped batches (below) add up to: 250 rows in the 4 s after both were
# warm, the first batch 4 s in, a model load of 3 s, 5 reads of 0.25 s and 5 scores of 0.5 s.
TWO_ACTORS_TIMING = {
    "rows_per_s_steady": 250 / 4.0,
    "time.first_batch_s": 4.0,
    "time.actors_ready_s": 4.0,
    "time.model_load_s": 3.0,
    "time.read_s": 5 * 0.25,
    "time.score_s": 5 * 0.5,
}


def test_steady_rows_per_s_counts_from_when_every_actor_had_scored_a_batch():
    timing = StreamTiming(started=100.0)
    one, two = ActorClock("a", 2.0, 103.0), ActorClock("b", 3.0, 104.0)
    for batch in (
        stamped(one, 100, 104.0),
        stamped(two, 100, 106.0),  # both actors warm from here
        stamped(one, 100, 107.0),
        stamped(two, 100, 108.0),
        stamped(one, 50, 110.0),
    ):
        timing.add(batch)
    timing.add(pa.table({"prediction": pa.array([], pa.float64())}))  # (no rows, no stamps)
    metrics = timing.metrics()
    assert {key: metrics[key] for key in TWO_ACTORS_TIMING} == pytest.approx(TWO_ACTORS_TIMING)


def test_the_batches_ray_data_joined_in_one_block_are_told_apart():
    one, two = ActorClock("a", 2.0, 103.0), ActorClock("b", 3.0, 104.0)
    joined = StreamTiming(started=100.0)
    joined.add(pa.concat_tables([stamped(one, 100, 104.0), stamped(two, 100, 106.0)]))
    joined.add(
        pa.concat_tables(
            [stamped(one, 100, 107.0), stamped(two, 100, 108.0), stamped(one, 50, 110.0)]
        )
    )
    metrics = joined.metrics()
    assert {key: metrics[key] for key in TWO_ACTORS_TIMING} == pytest.approx(TWO_ACTORS_TIMING)


def test_no_steady_rate_when_no_batch_came_after_the_warm_up():
    timing = StreamTiming(started=0.0)
    timing.add(stamped(ActorClock("a", 1.0, 1.0), 100, 2.0))
    assert "rows_per_s_steady" not in timing.metrics()


def series_model(path, horizon: int, target_in_file: bool = True) -> tuple:
    frame = pd.DataFrame({"co2": np.arange(6.0) * 2, "x": np.arange(6.0)})
    if not target_in_file:
        frame = frame.drop(columns=["co2"])
    frame.to_csv(path, index=False)
    data = TimeseriesData(
        source="timeseries",
        path=str(path),
        columns=["x"],
        target="co2",
        window=3,
        horizon=horizon,
        forecast="level",
    )
    config = {"inputs": "tensor", "input_shape": [3, 1], "classes": None}
    return PredictModel("models:/co2/1", None, config, None, "co2", {}, data), data


def test_a_series_holding_its_target_is_labelled_at_every_step_of_its_forecast(tmp_path):
    path = tmp_path / "series.csv"
    model, data = series_model(path, horizon=2)
    spec = predict_spec("models:/co2/1", str(path), str(tmp_path / "out.csv"))
    found = check_series(spec, model)
    assert found.label == ACTUAL and found.rows == 4
    assert found.label_columns == ["actual_1", "actual_2"]
    assert found.predictions == ["prediction_1", "prediction_2"]
    assert output_columns(model, spec, found) == [ROW, *found.label_columns, *found.predictions]
    assert {found.columns[c] for c in found.label_columns} == {"double"}
    windows = series_windows(spec, data, labelled=True)
    # windows end at rows 2..5 of 0, 2, ..., 10; each step h rows on, null past the end
    assert windows.column("actual_1").to_pylist() == [6.0, 8.0, 10.0, None]
    assert windows.column("actual_2").to_pylist() == [8.0, 10.0, None, None]
    truth = np.stack(
        [windows.column(c).to_numpy(zero_copy_only=False) for c in found.label_columns], 1
    )
    forecast = np.array([[7.0, 9.0], [8.0, 10.0], [10.0, 0.0], [0.0, 0.0]])
    scores = Scores(None)
    scores.add(truth[:3], forecast[:3], None)  # (in two batches, as the stream gives them)
    scores.add(truth[3:], forecast[3:], None)
    # step 2: errors 1, 0 over the 2 windows that have it; step 1: 1, 0, 0 over 3
    step_1, step_2 = (np.sqrt(1 / 3), 1 / 3), (np.sqrt(1 / 2), 1 / 2)
    assert scores.compute()[0] == pytest.approx(
        {
            "rmse": step_2[0],
            "mae": step_2[1],
            "rmse_all_steps": (step_1[0] + step_2[0]) / 2,
            "mae_all_steps": (step_1[1] + step_2[1]) / 2,
        }
    )


def test_a_one_step_forecast_keeps_one_prediction_and_one_actual_column(tmp_path):
    path = tmp_path / "series.csv"
    model, data = series_model(path, horizon=1)
    spec = predict_spec("models:/co2/1", str(path), str(tmp_path / "out.csv"))
    found = check_series(spec, model)
    assert output_columns(model, spec, found) == [ROW, ACTUAL, "prediction"]
    windows = series_windows(spec, data, labelled=True)
    assert windows.column(ACTUAL).to_pylist() == [6.0, 8.0, 10.0, None]
    scores = Scores(None)
    scores.add(windows.column(ACTUAL).to_pylist(), np.array([7.0, 8.0, 10.0, 0.0]), None)
    assert scores.compute()[0] == pytest.approx({"rmse": np.sqrt(1 / 3), "mae": 1 / 3})


class Forecast:
    """A pyfunc answering a forecast of 3 steps: the window's last value plus 1, 2, 3."""

    def predict(self, data, params=None):
        return data[:, -1, :1] + np.arange(1.0, 4.0)[None, :]


def test_a_forecast_batch_writes_one_column_per_step(tmp_path):
    model, _ = series_model(tmp_path / "series.csv", horizon=3)
    batch = pd.DataFrame({ROW: [2, 3]})
    windows = np.array([[[0.0], [1.0], [2.0]], [[1.0], [2.0], [3.0]]])
    predictions = ("prediction_1", "prediction_2", "prediction_3")
    out = predict_frame(Forecast(), model, windows, batch, [ROW, *predictions], predictions)
    assert list(out.columns) == [ROW, *predictions]
    assert out.to_numpy().tolist() == [[2, 3.0, 4.0, 5.0], [3, 4.0, 5.0, 6.0]]
    empty = predict_frame(
        Forecast(), model, windows[:0], batch[:0], [ROW, *predictions], predictions
    )
    assert list(empty.columns) == [ROW, *predictions]


def test_id_columns_named_as_a_forecast_output_are_refused(tmp_path):
    path = tmp_path / "series.csv"
    model, _ = series_model(path, horizon=2)
    pd.read_csv(path).assign(prediction_2=0.0).to_csv(path, index=False)
    spec = predict_spec(
        "models:/co2/1", str(path), str(tmp_path / "o.csv"), id_columns=["prediction_2"]
    )
    with pytest.raises(SpecError, match=r"\['prediction_2'\] name the output's own columns"):
        check_series(spec, model)


def test_a_series_without_its_target_has_no_label(tmp_path):
    path = tmp_path / "series.csv"
    model, data = series_model(path, horizon=1, target_in_file=False)
    found = check_series(predict_spec("models:/co2/1", str(path), str(tmp_path / "o.csv")), model)
    assert found.label is None and ACTUAL not in found.columns


def test_a_series_shorter_than_a_window_is_refused(tmp_path):
    path = tmp_path / "series.csv"
    model, _ = series_model(path, horizon=1)
    pd.read_csv(path).head(2).to_csv(path, index=False)
    with pytest.raises(SpecError, match="fewer rows than one window"):
        check_series(predict_spec("models:/co2/1", str(path), str(tmp_path / "o.csv")), model)


def test_a_model_that_is_not_there_exits_2_naming_what_is_before_ray(
    deeprig_home, tmp_path, ray_never_started
):
    from deeprig.cli import app
    from deeprig.tracking.runs import RunRecorder
    from deeprig.tracking.store import embedded_target
    from typer.testing import CliRunner

    target = embedded_target(deeprig_home)
    spec = {"name": "wine", "kind": "train"}
    untrained = RunRecorder.create(target, "wine", spec, "", tmp_path)
    untrained.finish("FAILED")  # (a run that ended before it logged a model)
    client = embedded_store_client(deeprig_home)  # (the store the recorder made)
    client.create_registered_model("wine")  # (no version yet)
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"a": [1.0]}).to_csv(rows, index=False)
    said = {}
    for model in (
        "models:/nowhere/1",
        "models:/wine/3",
        "models:/wine@champion",
        untrained.run_id,
        "0" * 32,
    ):
        result = CliRunner().invoke(app, ["predict", model, str(rows), "-o", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        said[model] = " ".join(result.output.split())
    assert "no registered model 'nowhere' (registered: wine)" in said["models:/nowhere/1"]
    assert "'wine' has no version 3 (versions: none" in said["models:/wine/3"]
    assert "no alias @champion (versions: none; aliases: none)" in said["models:/wine@champion"]
    assert "has no logged model" in said[untrained.run_id]
    assert f"no run {'0' * 32}" in said["0" * 32]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [untrained.run_id]  # no predict run left
    assert not (tmp_path / "o").exists()


def audio_model() -> PredictModel:
    from deeprig.spec.data import AudioData

    data = AudioData(source="audio", path="clips", duration_s=0.1, sample_rate=8000)
    config = {"inputs": "tensor", "input_shape": [800], "classes": ["no", "yes"]}
    return PredictModel("models:/words/1", None, config, None, "words", {}, data)


def test_unreadable_clips_are_counted_and_the_first_named_and_an_empty_folder_refused(tmp_path):
    import soundfile
    from deeprig.runners.predict.audio_input import check_audio

    (tmp_path / "yes").mkdir()
    soundfile.write(tmp_path / "yes" / "1.wav", np.zeros(800), 8000)
    (tmp_path / "yes" / "2.wav").write_bytes(b"RIFF, but not a wave")
    spec = predict_spec("models:/words/1", str(tmp_path), str(tmp_path / "out.parquet"))
    with pytest.raises(SpecError, match=r"1 of 2 files are not readable sound files.*2\.wav"):
        check_audio(spec, audio_model())
    (tmp_path / "empty").mkdir()
    empty = predict_spec("models:/words/1", str(tmp_path / "empty"), str(tmp_path / "o.csv"))
    with pytest.raises(SpecError, match="no .* files under"):
        check_audio(empty, audio_model())
