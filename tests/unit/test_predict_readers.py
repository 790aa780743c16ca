"""predict's input readers, without Ray: the routing table against the data sources,
folders of files (labelled or flat, unreadable files named before Ray starts and found
mid-stream), a series' windows, the rows a bad file leaves out, the progress line, and
the train run's data section read back from its params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from deeprig.data.sources import SOURCES
from deeprig.runners.predict import predict_spec
from deeprig.runners.predict.audio_input import clip_rate
from deeprig.runners.predict.file_input import list_folder
from deeprig.runners.predict.image_input import check_images, image_features
from deeprig.runners.predict.model import PredictModel, _data_spec
from deeprig.runners.predict.progress import Progress
from deeprig.runners.predict.readers import READERS, TABLE, reader_of
from deeprig.runners.predict.scorer import UnreadableRow, without_bad_rows
from deeprig.runners.predict.series_input import ROW, series_features, series_windows
from deeprig.spec import SpecError
from deeprig.spec.data import AudioData, DigitsData, ImagesData, TextData, TimeseriesData
from deeprig.tracking.lineage import flatten
from deeprig.tracking.model_source import trained_data
from PIL import Image
from rich.console import Console


def test_every_data_source_has_its_predict_reader_row():
    assert set(READERS) == set(SOURCES)


def image_model(classes=("cat", "dog"), shape=(1, 4, 4)) -> PredictModel:
    config = {"inputs": "tensor", "input_shape": list(shape), "classes": list(classes)}
    data = _data_spec({"source": "images", "path": "train"})
    return PredictModel("models:/pets/1", None, config, None, "pets", {}, data)


def write_images(folder, names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 200, np.uint8)).save(path)


def test_class_folders_of_the_models_classes_are_labels(tmp_path):
    write_images(tmp_path, ["cat/1.png", "dog/2.png", "dog/3.png"])
    files = list_folder(str(tmp_path), (".png",), ["cat", "dog"])
    assert [p.rsplit("/", 2)[-2:] for p in files.paths] == [
        ["cat", "1.png"],
        ["dog", "2.png"],
        ["dog", "3.png"],
    ]
    assert files.labels == ["cat", "dog", "dog"]


def test_a_flat_folder_or_unknown_folders_have_no_labels(tmp_path):
    write_images(tmp_path, ["a.png", "batch1/b.png"])
    assert list_folder(str(tmp_path), (".png",), ["cat", "dog"]).labels is None
    write_images(tmp_path / "two", ["cat/a.png", "bird/b.png"])
    assert list_folder(str(tmp_path / "two"), (".png",), ["cat", "dog"]).labels is None


def test_unreadable_images_are_counted_and_the_first_named_before_ray(tmp_path):
    write_images(tmp_path, ["cat/1.png"])
    (tmp_path / "cat" / "2.png").write_bytes(b"not an image")
    (tmp_path / "cat" / "3.png").write_bytes(b"")
    spec = predict_spec("models:/pets/1", str(tmp_path), str(tmp_path / "out.parquet"))
    with pytest.raises(SpecError, match=r"2 of 3 files are not readable images.*2\.png"):
        check_images(spec, image_model())


def test_an_image_folder_streams_paths_and_labels(tmp_path):
    write_images(tmp_path, ["cat/1.png", "dog/2.png"])
    spec = predict_spec("models:/pets/1", str(tmp_path), str(tmp_path / "out.parquet"))
    found = check_images(spec, image_model())
    assert (found.rows, found.label, found.passed, found.key) == (2, "label", ["path"], "path")
    assert found.labels == ["cat", "dog"]


def test_a_file_corrupted_mid_stream_is_a_bad_row_the_others_decoded(tmp_path):
    write_images(tmp_path, ["1.png", "2.png", "3.png"])
    (tmp_path / "2.png").write_bytes(b"truncated")
    batch = pd.DataFrame({"path": [str(tmp_path / f"{i}.png") for i in (1, 2, 3)]})
    pixels, bad = image_features(image_model(), batch)
    assert pixels.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(pixels, 200 / 255, rtol=1e-6)
    assert [row for row, _ in bad] == [1]


class Collected(list):
    def put(self, item):
        self.append(item)


def test_a_bad_row_fails_naming_its_file_unless_skipped():
    batch = pd.DataFrame({"path": ["a.png", "b.png", "c.png"]})
    with pytest.raises(UnreadableRow, match=r"b\.png cannot be read \(broken\).*--skip-bad-rows"):
        without_bad_rows(batch, [(1, "broken")], "path", None)
    skipped = Collected()
    kept = without_bad_rows(batch, [(1, "broken")], "path", skipped)
    assert kept["path"].tolist() == ["a.png", "c.png"]
    assert skipped == [[("b.png", "broken")]]


def test_series_windows_end_at_each_row_with_its_ids(tmp_path):
    path = tmp_path / "series.csv"
    pd.DataFrame({"week": list("abcdef"), "co2": np.arange(6.0), "x": np.arange(6.0) * 10}).to_csv(
        path, index=False
    )
    data = TimeseriesData(
        source="timeseries", path=str(path), columns=["co2", "x"], target="co2", window=3
    )
    spec = predict_spec("models:/co2/1", str(path), str(tmp_path / "out.csv"), id_columns=["week"])
    windows = series_windows(spec, data)
    assert windows.column(ROW).to_pylist() == [2, 3, 4, 5]
    assert windows.column("week").to_pylist() == ["c", "d", "e", "f"]
    config = {"inputs": "tensor", "input_shape": [3, 2], "classes": None}
    model = PredictModel("models:/co2/1", None, config, None, "co2", {}, data)
    x, bad = series_features(model, windows.to_pandas())
    assert bad == [] and x.shape == (4, 3, 2)
    np.testing.assert_array_equal(x[1], [[1, 10], [2, 20], [3, 30]])


@pytest.mark.parametrize(
    "data",
    [
        TimeseriesData(source="timeseries", path="/d/co2.csv", columns=["co2", "7"], target="co2"),
        ImagesData(source="images", path="/d/x", channels=3, image_size=[28, 28]),
        AudioData(source="audio", path="/d/clips", sample_rate=16000, duration_s=0.5),
        TextData(source="text", path="/d/t.csv", text="review", label="1"),
    ],
)
def test_a_train_runs_data_is_read_back_from_its_params(data):
    params = flatten("", {"name": "x", "data": data.model_dump(mode="json")}, {})
    params["data.classes"] = "cat, dog"  # (what a run learned is logged beside its spec)
    assert _data_spec(trained_data(params)) == data
    searched = flatten("", {"base": {"data": data.model_dump(mode="json")}}, {})
    assert _data_spec(trained_data(searched)) == data
    assert trained_data({"optim.lr": "0.1"}) is None


def test_a_model_of_a_built_in_data_set_is_refused_and_an_unknown_one_reads_a_table():
    model = PredictModel(
        "m", None, {"inputs": "tensor"}, None, "e", {}, DigitsData(source="builtin:digits")
    )
    with pytest.raises(SpecError, match="builtin:digits"):
        reader_of(model)
    assert reader_of(PredictModel("m", None, {}, None, "e", {})) is TABLE


def test_an_audio_models_rate_is_its_spec_or_its_length_over_the_duration():
    config = {"inputs": "tensor", "input_shape": [16000]}
    data = AudioData(source="audio", path="clips", duration_s=1.0)
    assert clip_rate(PredictModel("m", None, config, None, "e", {}, data)) == 16000
    data = AudioData(source="audio", path="clips", duration_s=1.0, sample_rate=8000)
    assert clip_rate(PredictModel("m", None, config, None, "e", {}, data)) == 8000


def test_the_progress_line_shows_rows_rate_and_time_left():
    progress = Progress(Console(file=None, force_terminal=False), 1000)
    progress.rows, progress.skipped = 240, 10
    progress.started -= 5.0
    line = progress.line(progress.started + 5.0)
    assert "250/1,000 rows, 10 skipped, 50 rows/s, 15 s left" in line
    assert "[######.................." in line


def test_a_submitted_predict_job_is_in_the_job_history_with_its_score(deeprig_home, tmp_path):
    import json

    from deeprig.cli import app
    from deeprig.tracking.runs import RunRecorder
    from deeprig.tracking.store import embedded_target
    from deeprig.tracking.tags import Tag
    from typer.testing import CliRunner

    target = embedded_target(deeprig_home)
    tags = {Tag.JOB_STATUS: "SUCCEEDED", Tag.RAY_SUBMISSION_ID: "deeprig-score-1a2b3c4d"}
    spec = {"name": "score-wine", "kind": "predict"}
    run = RunRecorder.create(target, "wine", spec, "", tmp_path, extra_tags=tags)
    run.log_metrics({"rows": 60.0, "rows_per_s": 900.0, "accuracy": 0.95})
    run.finish("FINISHED")
    listed = CliRunner().invoke(app, ["list", "--history", "-o", "json"])
    (record,) = json.loads(listed.output)
    assert (record["job"], record["status"], record["run_id"]) == (
        "score-wine",
        "SUCCEEDED",
        run.run_id,
    )
    assert (record["metric"], record["value"]) == ("accuracy", 0.95)
