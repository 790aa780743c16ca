"""The data-source table: one row per data class of the spec, and each row doing its job on
tiny generated data (describe, samples, where its rows come from; the array sources' splits,
built without Ray; the logged model behind its preprocessing)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from deeprig.data.info import Fitted
from deeprig.data.sources import SOURCES, build_datasets, describe_data, first_samples, source_of
from deeprig.spec.data import (
    DATA_CONFIGS,
    AudioData,
    DigitsData,
    ImagesData,
    ParquetData,
    PythonData,
    SyntheticData,
    TextData,
    TimeseriesData,
)
from PIL import Image
from torch import nn

from tests.conftest import REPO


def test_every_data_class_of_the_spec_has_one_row():
    assert set(SOURCES) == set(DATA_CONFIGS)


def _table(folder: Path) -> ParquetData:
    rng = np.random.default_rng(0)
    path = folder / "table.parquet"
    pq.write_table(
        pa.table({"a": rng.normal(size=20), "b": rng.normal(size=20), "k": [0, 1] * 10}), path
    )
    return ParquetData(source="parquet", path=str(path), features=["a", "b"], label="k")


def _data_function(folder: Path) -> PythonData:
    (folder / "tiny_arrays.py").write_text(
        "import numpy as np\n\n\n"
        "def arrays(rows):\n"
        "    rng = np.random.default_rng(0)\n"
        "    return rng.normal(size=(rows, 5)).astype('float32'), np.arange(rows) % 2\n"
    )
    return PythonData(source="python", target="tiny_arrays:arrays", args={"rows": 20})


def _tones(folder: Path) -> AudioData:
    import soundfile

    for label, hz in (("low", 300), ("high", 2000)):
        (folder / "tones" / label).mkdir(parents=True)
        for i in range(3):
            wave = np.sin(2 * np.pi * hz * np.arange(4000) / 8000) * (0.2 + 0.1 * i)
            soundfile.write(folder / "tones" / label / f"{i}.wav", wave, 8000)
    return AudioData(source="audio", path=str(folder / "tones"), duration_s=0.25, n_mels=8)


def _pets(folder: Path) -> ImagesData:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (folder / "pets" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, size=(6, 6), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / "pets" / name / f"{i}.png")
    return ImagesData(source="images", path=str(folder / "pets"))


def _reviews(folder: Path) -> TextData:
    rows = [("good film", "fresh"), ("bad plot", "rotten")] * 10
    table = pa.table({"text": [t for t, _ in rows], "label": [k for _, k in rows]})
    pacsv.write_csv(table, folder / "reviews.csv")
    path = str(folder / "reviews.csv")
    return TextData(
        source="text", path=path, text="text", label="label", tokenizer={"max_length": 4}
    )


def _series(folder: Path) -> TimeseriesData:
    pq.write_table(pa.table({"y": np.sin(np.arange(40) / 3.0)}), folder / "series.parquet")
    path = str(folder / "series.parquet")
    return TimeseriesData(source="timeseries", path=path, columns=["y"], target="y", window=5)


# Each data class -> a spec of it over a few rows written into a folder (the folder is on
# sys.path, for a data function). A new source's class needs one here too.
TINY_SPECS: dict[type, Callable[[Path], Any]] = {
    DigitsData: lambda folder: DigitsData(source="builtin:digits"),
    SyntheticData: lambda folder: SyntheticData(
        source="builtin:synthetic", num_samples=40, shape=[3, 2], num_classes=3
    ),
    ParquetData: _table,
    PythonData: _data_function,
    ImagesData: _pets,
    TextData: _reviews,
    TimeseriesData: _series,
    AudioData: _tones,
}
# Where each source's MLflow datasets say their rows come from (None: the spec's path).
ORIGINS = {
    DigitsData: "sklearn.datasets:load_digits",
    SyntheticData: "deeprig.data.builtin:synthetic_arrays",
    PythonData: "tiny_arrays:arrays",
}


@pytest.fixture
def tiny_spec(tmp_path, monkeypatch) -> Callable[[type], Any]:
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda data_class: TINY_SPECS[data_class](tmp_path)


def _source_name(data_class: type) -> str:
    return get_args(data_class.model_fields["source"].annotation)[0]


@pytest.mark.parametrize("data_class", DATA_CONFIGS, ids=_source_name)
def test_a_source_describes_and_samples_tiny_data(data_class, tiny_spec):
    spec = tiny_spec(data_class)
    info = describe_data(spec)
    samples = first_samples(spec, info, 2)
    assert samples.shape == (2, *info.input_shape)
    origin = source_of(spec).origin(spec)
    assert origin == ORIGINS.get(data_class, getattr(spec, "path", None))


# Sources born as arrays: their splits are made on the driver, without Ray.
ARRAY_SOURCES = [DigitsData, SyntheticData, PythonData, TextData, TimeseriesData, AudioData]


@pytest.mark.parametrize("data_class", ARRAY_SOURCES, ids=_source_name)
def test_an_array_source_builds_its_splits_without_ray(data_class, tiny_spec):
    spec = tiny_spec(data_class)
    info = describe_data(spec)
    prepared = build_datasets(spec, info, seed=0, num_workers=1, data_cpus=1.0, in_memory=True)
    assert prepared.arrays is not None and prepared.train is None
    (x, y), (vx, vy) = prepared.arrays["train"], prepared.arrays["val"]
    assert x.shape == (info.num_train, *info.input_shape) and len(y) == info.num_train
    assert vx.shape == (info.num_val, *info.input_shape) and len(vy) == info.num_val


def test_the_logged_model_reads_raw_features_behind_fitted_statistics(tiny_spec):
    spec = tiny_spec(ParquetData)
    fitted = Fitted(input_mean=(1.0, 2.0), input_std=(2.0, 4.0), stats_shape=(2,))
    model, exportable, requirements = source_of(spec).serve(nn.Identity(), fitted, spec, [])
    assert exportable and not requirements
    assert torch.equal(model(torch.tensor([[3.0, 6.0]])), torch.tensor([[1.0, 1.0]]))
    net = nn.Identity()
    assert source_of(spec).serve(net, Fitted(), spec, [])[0] is net  # nothing was fitted


def test_the_logged_text_model_reads_sentences_behind_its_tokenizer(tiny_spec):
    from deeprig.data.text import text_arrays

    spec = tiny_spec(TextData)
    _, _, fitted = text_arrays(spec, describe_data(spec), seed=0)
    net = nn.Sequential(nn.Embedding(100, 2), nn.Flatten(), nn.Linear(8, 2))  # 4 tokens in
    model, exportable, requirements = source_of(spec).serve(net, fitted, spec, ["fresh", "rotten"])
    assert not exportable and requirements[0].startswith("tokenizers==")
    assert model.predict(["good film", "bad plot"])[0] in ("fresh", "rotten")


def test_the_checklist_for_a_new_source_names_files_that_exist():
    architecture = (REPO / "ARCHITECTURE.md").read_text()
    checklist = architecture.split("### Adding a data source", 1)[1].split("\n#", 1)[0]
    named = re.findall(r"`((?:platform|tests)/[\w/.]+\.py|README\.md)`", checklist)
    assert {"platform/deeprig/spec/data.py", "platform/deeprig/data/sources.py"} <= set(named)
    assert all((REPO / path).exists() for path in named), named
