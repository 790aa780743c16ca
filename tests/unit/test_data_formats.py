"""Images, text, time series and tabular preprocessing on the driver: every bad input
refused with its field and the fix, and what is fitted seeing the training split only."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from deeprig.data import DataProblem, describe_data
from deeprig.data.shard import ArrayShard, ShardBatches
from deeprig.data.text import encode, text_arrays
from deeprig.data.timeseries import series_arrays, series_model
from deeprig.data.tokenizer import train_tokenizer
from deeprig.regression import regression_errors
from deeprig.spec.data import ImagesData, ParquetData, TextData, TimeseriesData, TokenizerSpec
from deeprig.training.evaluate import evaluate, loss_function, split_metrics
from PIL import Image
from pydantic import ValidationError


def write_images(root: Path, classes: dict[str, int], size=(8, 8), mode="L") -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        channels = 3 if mode == "RGB" else 1
        for i in range(count):
            pixels = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(), mode=mode).save(root / name / f"{i}.png")
    return root


def images(path: Path, **fields) -> ImagesData:
    return ImagesData(source="images", path=str(path), **fields)


def problem_of(spec) -> DataProblem:
    with pytest.raises(DataProblem) as caught:
        describe_data(spec)
    return caught.value


# --- images ----------------------------------------------------------------------------------


def test_an_image_folder_has_one_class_per_sub_folder(tmp_path):
    root = write_images(tmp_path / "pets", {"dog": 3, "cat": 5})
    info = describe_data(images(root))
    assert info.classes == ("cat", "dog")  # sorted: ids are stable whatever the listing order
    assert info.input_shape == (1, 8, 8) and info.num_rows == 8 and info.num_outputs == 2


def test_an_empty_image_folder_is_refused_with_the_layout_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    found = problem_of(images(tmp_path / "empty"))
    assert found.path == "data.path" and "one sub-folder per class" in str(found)


def test_a_missing_image_folder_is_refused(tmp_path):
    found = problem_of(images(tmp_path / "nowhere"))
    assert found.path == "data.path" and "no folder" in str(found)


def test_a_single_class_is_refused(tmp_path):
    root = write_images(tmp_path / "one", {"dog": 3})
    found = problem_of(images(root))
    assert "only one class folder ('dog')" in str(found)


def test_unreadable_images_are_counted_and_the_first_named(tmp_path):
    root = write_images(tmp_path / "pets", {"dog": 3, "cat": 3})
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    (root / "dog" / "empty.jpg").write_bytes(b"")
    found = problem_of(images(root))
    assert found.path == "data.path"
    assert "2 of 8 files are not readable images" in str(found)
    assert "broken.png" in str(found)  # the first, in class order


def test_mixed_sizes_need_an_image_size(tmp_path):
    root = write_images(tmp_path / "pets", {"dog": 3})
    write_images(root, {"cat": 2}, size=(12, 10))
    found = problem_of(images(root))
    assert found.path == "data.image_size" and "2 sizes" in str(found)
    assert "8x8: 3" in str(found) and "12x10: 2" in str(found)
    info = describe_data(images(root, image_size=[16, 16], channels=3))
    assert info.input_shape == (3, 16, 16)


def test_a_test_set_with_an_unknown_class_is_refused(tmp_path):
    train = write_images(tmp_path / "train", {"dog": 2, "cat": 2})
    test = write_images(tmp_path / "test", {"dog": 2, "cow": 2})
    found = problem_of(images(train, test_path=str(test)))
    assert found.path == "data.test_path" and "cow" in str(found)


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def test_parquet_with_image_bytes_and_class_names(tmp_path):
    path = tmp_path / "images.parquet"
    table = pa.table({"png": [png_bytes(v) for v in range(6)], "kind": ["b", "a"] * 3})
    pq.write_table(table, path)
    spec = images(path, image_column="png", label="kind")
    info = describe_data(spec)
    assert info.classes == ("a", "b") and info.input_shape == (1, 6, 6)
    pq.write_table(pa.table({"png": [b"junk"] * 2, "kind": ["a", "b"]}), path)
    assert "row 0 of 'png' is not a readable image" in str(problem_of(spec))


def test_image_bytes_and_labels_go_together():
    with pytest.raises(ValidationError, match="image_column and label go together"):
        ImagesData(source="images", path="x.parquet", image_column="png")


# --- text ------------------------------------------------------------------------------------


def write_reviews(path: Path, rows: list[tuple[str, str]]) -> Path:
    pa_table = pa.table({"text": [t for t, _ in rows], "label": [lbl for _, lbl in rows]})
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa_table, path)
    return path


def text(path: Path, **fields) -> TextData:
    return TextData(source="text", path=str(path), text="text", label="label", **fields)


def test_text_is_token_ids_of_max_length_with_named_classes(tmp_path):
    path = write_reviews(tmp_path / "r.csv", [("good film", "fresh"), ("bad", "rotten")] * 5)
    info = describe_data(text(path, tokenizer={"max_length": 7, "vocab_size": 100}))
    assert info.input_shape == (7,) and info.input_dtype == "int64"
    assert info.vocab_size == 100 and info.classes == ("fresh", "rotten")


def test_text_columns_are_checked(tmp_path):
    path = write_reviews(tmp_path / "r.csv", [("good", "fresh"), ("bad", "rotten")])
    found = problem_of(TextData(source="text", path=str(path), text="review", label="label"))
    assert found.path == "data.path" and "['review'] not in" in str(found)
    one_class = write_reviews(tmp_path / "one.csv", [("good", "fresh"), ("fine", "fresh")])
    assert "only one class" in str(problem_of(text(one_class)))
    numbers = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": [1, 2], "label": ["a", "b"]}), numbers)
    found = problem_of(text(numbers))
    assert found.path == "data.text" and "not text" in str(found)


def test_the_tokenizer_learns_from_the_training_split_only(tmp_path):
    rows = [(f"common words sample{i}", "a" if i % 2 else "b") for i in range(40)]
    path = write_reviews(tmp_path / "r.csv", rows)
    spec = text(path, tokenizer={"max_length": 5})
    info = describe_data(spec)
    (train_x, _), (val_x, _), fitted = text_arrays(spec, info, seed=0)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_str(fitted.tokenizer_json).get_vocab()
    # Each row's own word: a training row's is known, a validation row's never is.
    assert 1 not in train_x[:, 2] and (val_x[:, 2] == 1).all()  # id 1: [UNK]
    assert "common" in vocab and fitted.fitted_on_rows == len(train_x) == 32


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_tokenizers_pad_with_id_0_and_truncate(kind):
    tokenizer = train_tokenizer(
        ["the cat sat on the mat", "a dog"] * 20, TokenizerSpec(kind=kind, max_length=4)
    )
    ids = encode(tokenizer, ["a dog", "the cat sat on the mat again"])
    assert ids.shape == (2, 4) and ids[0, -1] == 0 and (ids[1] != 0).all()


# --- time series -----------------------------------------------------------------------------


def write_series(path: Path, values, **more) -> Path:
    pq.write_table(pa.table({"y": values, **more}), path)
    return path


def series(path: Path, **fields) -> TimeseriesData:
    base = {"columns": ["y"], "target": "y", "window": 4, "horizon": 2, "val_fraction": 0.25}
    return TimeseriesData(source="timeseries", path=str(path), **(base | fields))


def test_windows_split_in_time_order_with_no_target_shared(tmp_path):
    path = write_series(tmp_path / "s.parquet", np.arange(30, dtype=float))
    spec = series(path, forecast="level", scale=False)
    info = describe_data(spec)
    # 25 windows: 6 validate; the one before them is left out, its step 2 being their
    # first target
    assert info.num_rows == 30 - 4 - 2 + 1 - 1 and info.num_val == 6 and info.num_outputs == 2
    (x, y), (vx, vy), _ = series_arrays(spec, info)
    assert x.shape == (18, 4, 1) and vx.shape == (6, 4, 1) and y.shape == (18, 2)
    assert y.max() < vy.min()  # every validation target comes after every training one
    assert np.array_equal(x[0, :, 0], [0, 1, 2, 3]) and np.array_equal(y[0], [4, 5])
    assert np.array_equal(vx[0, :, 0], [19, 20, 21, 22]) and np.array_equal(vy[0], [23, 24])


def test_one_step_ahead_leaves_no_window_out(tmp_path):
    path = write_series(tmp_path / "s.parquet", np.arange(30.0))
    spec = series(path, horizon=1, forecast="level", scale=False)
    info = describe_data(spec)
    assert info.num_rows == 30 - 4 and info.num_outputs == 1
    (x, y), (vx, vy), _ = series_arrays(spec, info)
    assert y.shape == (info.num_train, 1) and vx[0, 0, 0] == x[-1, 0, 0] + 1
    assert vy[0, 0] == y[-1, 0] + 1


def test_scaling_sees_the_training_windows_only(tmp_path):
    values = np.arange(30, dtype=float)
    spec = series(write_series(tmp_path / "a.parquet", values), forecast="level")
    changed = values.copy()
    changed[-3:] = 1000.0  # only validation targets change
    other = series(write_series(tmp_path / "b.parquet", changed), forecast="level")
    fitted_a = series_arrays(spec, describe_data(spec))[2]
    fitted_b = series_arrays(other, describe_data(other))[2]
    assert fitted_a.input_mean == fitted_b.input_mean
    assert fitted_a.target_mean == fitted_b.target_mean


def test_each_step_is_scaled_by_its_own_spread(tmp_path):
    # A random walk: the change k steps on spreads as sqrt(k).
    walk = np.cumsum(np.random.default_rng(0).normal(size=4000))
    spec = series(write_series(tmp_path / "s.parquet", walk), horizon=4)
    (_, y), _, fitted = series_arrays(spec, describe_data(spec))
    assert fitted.target_std is not None and len(fitted.target_std) == 4
    assert np.allclose(
        np.array(fitted.target_std) / fitted.target_std[0], np.sqrt([1, 2, 3, 4]), rtol=0.1
    )
    assert np.allclose(y.std(axis=0), 1.0, atol=1e-4)  # every step scaled to std 1
    assert fitted.target_mean == (0.0,) * 4  # changes: no change is 0


def test_persistence_is_scored_in_the_series_units(tmp_path):
    # A line rising 2 a step, forecast 3 steps ahead: persistence is 2, 4, 6 short.
    spec = series(write_series(tmp_path / "s.parquet", 2.0 * np.arange(40)), horizon=3)
    _, (_, vy), fitted = series_arrays(spec, describe_data(spec))
    baseline = dict(fitted.baseline)
    assert baseline["val_rmse_persistence"] == pytest.approx(6.0)  # at the last step
    assert baseline["val_mae_persistence"] == pytest.approx(6.0)
    assert baseline["val_rmse_all_steps_persistence"] == pytest.approx(4.0)  # (2 + 4 + 6) / 3
    assert baseline["val_mae_all_steps_persistence"] == pytest.approx(4.0)
    # forecast: change: every window's change is the same 2, 4, 6, scaled by its (zero) spread
    assert np.allclose(vy * np.array(fitted.target_std), [2.0, 4.0, 6.0])


def test_one_step_ahead_persistence_has_no_mean_over_steps(tmp_path):
    spec = series(write_series(tmp_path / "s.parquet", 2.0 * np.arange(40)), horizon=1)
    baseline = dict(series_arrays(spec, describe_data(spec))[2].baseline)
    assert baseline == pytest.approx({"val_rmse_persistence": 2.0, "val_mae_persistence": 2.0})


class Constant(torch.nn.Module):
    """A network answering the same scaled value at every step of every window."""

    def __init__(self, value: float, steps: int):
        super().__init__()
        self.value, self.steps = value, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), self.steps), self.value)


def test_the_forecaster_reads_raw_windows_and_answers_every_step_in_series_units(tmp_path):
    walk = 400 + np.cumsum(np.random.default_rng(1).normal(size=300))
    spec = series(write_series(tmp_path / "s.parquet", walk), horizon=3)
    fitted = series_arrays(spec, describe_data(spec))[2]
    windows = torch.tensor(walk[:40], dtype=torch.float32).reshape(10, 4, 1)
    no_change, _, _ = series_model(Constant(0.0, 3), fitted, spec, [])
    out = no_change(windows)
    assert out.shape == (10, 3)  # (windows, horizon)
    assert torch.allclose(out, windows[:, -1, :].expand(10, 3))  # its last value, every step
    one_std, _, _ = series_model(Constant(1.0, 3), fitted, spec, [])
    expected = windows[:, -1, :] + torch.tensor(fitted.target_std, dtype=torch.float32)
    assert torch.allclose(one_std(windows), expected)  # each step scaled back by its own


def test_the_loss_is_the_mean_over_steps_and_one_step_is_plain_squared_error():
    out, y = torch.randn(8, 3), torch.randn(8, 3)
    loss = loss_function("regression")
    assert torch.allclose(loss(out, y), ((out - y) ** 2).mean(dim=1).sum())
    one = torch.randn(8, 1)
    plain = torch.nn.MSELoss(reduction="sum")(one.squeeze(-1), y[:, 0])
    assert torch.equal(loss(one.squeeze(-1), y[:, :1]), plain)


def test_validation_scores_the_last_step_and_the_mean_over_steps():
    # Scaled labels of 2 steps, a network answering 0: errors 1 and 2 at steps 1 and 2 on
    # every row, the steps' spreads 3 and 5 (so 3 and 10 in the series' units).
    x = np.zeros((6, 4, 1), np.float32)
    y = np.tile(np.array([[1.0, -2.0]], np.float32), (6, 1))
    batches = ShardBatches(ArrayShard(x, y), 4, torch.device("cpu"), torch.float32, True, 0)
    loss_fn = loss_function("regression")
    totals = evaluate(
        Constant(0.0, 2), batches, loss_fn, None, torch.device("cpu"), None, outputs=2
    )
    scores = split_metrics("regression", totals.tolist(), (3.0, 5.0))
    assert scores == pytest.approx(
        {"loss": 2.5, "rmse": 10.0, "mae": 10.0, "rmse_all_steps": 6.5, "mae_all_steps": 6.5}
    )
    # One output: no means over steps; a step with no rows scored is left out of them.
    assert set(regression_errors([4.0], [2.0], 1.0)) == {"rmse", "mae"}
    assert regression_errors([1.0, 9.0], [1.0, 3.0], [1, 0]) == {
        "rmse_all_steps": 1.0,
        "mae_all_steps": 1.0,
    }


def test_bad_series_are_refused_with_the_fix(tmp_path):
    short = write_series(tmp_path / "short.parquet", [1.0, 2.0, 3.0, 4.0, 5.0])
    found = problem_of(series(short))
    assert found.path == "data.window" and "shorten the window" in str(found)
    # 4 windows of horizon 3: 1 validates, the 2 before it are left out, 1 is left to train
    assert describe_data(series(write_series(tmp_path / "s.parquet", np.arange(10.0)), horizon=3))
    found = problem_of(series(tmp_path / "s.parquet", horizon=3, val_fraction=0.5))
    assert found.path == "data.val_fraction" and "the 2 before the validation part" in str(found)
    gaps = write_series(tmp_path / "gaps.parquet", [1.0, None, 3.0] * 10)
    found = problem_of(series(gaps))
    assert "1 missing values" not in str(found) and "10 missing values" in str(found)
    words = write_series(tmp_path / "w.parquet", [1.0] * 20, note=["x"] * 20)
    found = problem_of(series(words, columns=["y", "note"]))
    assert found.path == "data.columns" and "not numbers" in str(found)


def test_forecasting_a_change_needs_the_target_among_the_inputs():
    with pytest.raises(ValidationError, match="add 'y' to columns"):
        TimeseriesData(source="timeseries", path="s.csv", columns=["x"], target="y")


# --- tabular ---------------------------------------------------------------------------------


def test_parquet_string_labels_become_class_ids(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "kind": ["dog", "cat", "dog"]}), path)
    info = describe_data(
        ParquetData(source="parquet", path=str(path), features=["a"], label="kind")
    )
    assert info.task == "classification" and info.classes == ("cat", "dog")


# --- data paths and errors across processes ----------------------------------------------


def test_local_data_paths_are_made_absolute_and_uris_kept(tmp_path, monkeypatch):
    from deeprig.spec.loader import load_spec_text

    monkeypatch.chdir(tmp_path)
    spec = load_spec_text(
        "name: a\nkind: train\nmodel: {name: cnn}\n"
        "data: {source: images, path: pets/train, test_path: s3://bucket/pets/test}\n"
    )
    # a Tune trial or a Ray worker runs in a folder of its own: the path must not depend on it
    assert spec.data.path == str(tmp_path / "pets" / "train")
    assert spec.data.test_path == "s3://bucket/pets/test"


def test_a_data_problem_survives_the_copy_ray_makes_of_it():
    import copy
    import pickle

    problem = DataProblem("data.path", "no folder at 'x'")
    for copied in (copy.copy(problem), pickle.loads(pickle.dumps(problem))):
        assert copied.path == "data.path" and str(copied) == "no folder at 'x'"


def test_statistics_summed_over_image_bytes_match_those_of_their_floats():
    from deeprig.data.standardize import fitted_from_sums, pixel_floats, pixel_sums

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5000, 3, 4, 4), dtype=np.uint8)  # two sum chunks
    floats = pixels.astype(np.float64) / 255.0
    parts = [pixel_sums(pixels[:1000], (1, 2)), pixel_sums(pixels[1000:], (1, 2))]
    fitted = fitted_from_sums(parts, (3, 1, 1))
    mean, std = floats.mean(axis=(0, 2, 3)), floats.std(axis=(0, 2, 3))
    np.testing.assert_allclose(fitted.input_mean, mean, rtol=1e-9)
    np.testing.assert_allclose(fitted.input_std, std, rtol=1e-7)
    assert fitted.fitted_on_rows == 5000
    expected = (floats - mean[None, :, None, None]) / std[None, :, None, None]
    standardized = pixel_floats(pixels, fitted)
    assert standardized.dtype == np.float32
    np.testing.assert_allclose(standardized, expected, atol=1e-6)
    np.testing.assert_allclose(pixel_floats(pixels, None), floats, atol=1e-7)
