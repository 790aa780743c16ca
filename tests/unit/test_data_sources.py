"""The data-source table: one row per data class of the spec, and each row doing its job on
tiny generated data (describe, samples, where its rows come from; the array sources' splits,
built without Ray; the logged model behind its preprocessing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

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


def _tiny_spec(source: str, folder: Path, monkeypatch: pytest.MonkeyPatch):
    """A spec of `source` over a few rows written into `folder`."""
    rng = np.random.default_rng(0)
    if source == "builtin:digits":
        return DigitsData(source=source)
    if source == "builtin:synthetic":
        return SyntheticData(source=source, num_samples=40, shape=[3, 2], num_classes=3)
    if source == "parquet":
        path = folder / "table.parquet"
        pq.write_table(
            pa.table({"a": rng.normal(size=20), "b": rng.normal(size=20), "k": [0, 1] * 10}),
            path,
        )
        return ParquetData(source=source, path=str(path), features=["a", "b"], label="k")
    if source == "python":
        (folder / "tiny_arrays.py").write_text(
            "import numpy as np\n\n\n"
            "def arrays(rows):\n"
            "    rng = np.random.default_rng(0)\n"
            "    return rng.normal(size=(rows, 5)).astype('float32'), np.arange(rows) % 2\n"
        )
        monkeypatch.syspath_prepend(str(folder))
        return PythonData(source=source, target="tiny_arrays:arrays", args={"rows": 20})
    if source == "images":
        for name in ("cat", "dog"):
            (folder / "pets" / name).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, size=(6, 6), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / "pets" / name / f"{i}.png")
        return ImagesData(source=source, path=str(folder / "pets"))
    if source == "text":
        path = folder / "reviews.csv"
        rows = [("good film", "fresh"), ("bad plot", "rotten")] * 10
        pacsv.write_csv(
            pa.table({"text": [t for t, _ in rows], "label": [k for _, k in rows]}), path
        )
        return TextData(
            source=source, path=str(path), text="text", label="label", tokenizer={"max_length": 4}
        )
    assert source == "timeseries"
    path = folder / "series.parquet"
    pq.write_table(pa.table({"y": np.sin(np.arange(40) / 3.0)}), path)
    return TimeseriesData(source=source, path=str(path), columns=["y"], target="y", window=5)


SOURCE_NAMES = sorted(get_args(cls.model_fields["source"].annotation)[0] for cls in DATA_CONFIGS)
# Where each source's MLflow datasets say their rows come from (a path: the spec's own).
ORIGINS = {"builtin:digits": "sklearn.datasets:load_digits", "python": "tiny_arrays:arrays"}
ORIGINS["builtin:synthetic"] = "deeprig.data.builtin:synthetic_arrays"


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_a_source_describes_and_samples_tiny_data(source, tmp_path, monkeypatch):
    spec = _tiny_spec(source, tmp_path, monkeypatch)
    info = describe_data(spec)
    samples = first_samples(spec, info, 2)
    assert samples.shape == (2, *info.input_shape)
    origin = source_of(spec).origin(spec)
    assert origin == ORIGINS.get(source, getattr(spec, "path", None))


# Sources born as arrays: their splits are made on the driver, without Ray.
ARRAY_SOURCES = ["builtin:digits", "builtin:synthetic", "python", "text", "timeseries"]


@pytest.mark.parametrize("source", ARRAY_SOURCES)
def test_an_array_source_builds_its_splits_without_ray(source, tmp_path, monkeypatch):
    spec = _tiny_spec(source, tmp_path, monkeypatch)
    info = describe_data(spec)
    prepared = build_datasets(spec, info, seed=0, num_workers=1, data_cpus=1.0, in_memory=True)
    assert prepared.arrays is not None and prepared.train is None
    (x, y), (vx, vy) = prepared.arrays["train"], prepared.arrays["val"]
    assert x.shape == (info.num_train, *info.input_shape) and len(y) == info.num_train
    assert vx.shape == (info.num_val, *info.input_shape) and len(vy) == info.num_val


def test_the_logged_model_reads_raw_features_behind_fitted_statistics(tmp_path, monkeypatch):
    spec = _tiny_spec("parquet", tmp_path, monkeypatch)
    fitted = Fitted(input_mean=(1.0, 2.0), input_std=(2.0, 4.0), stats_shape=(2,))
    model, exportable, requirements = source_of(spec).serve(nn.Identity(), fitted, spec, [])
    assert exportable and not requirements
    assert torch.equal(model(torch.tensor([[3.0, 6.0]])), torch.tensor([[1.0, 1.0]]))
    net = nn.Identity()
    assert source_of(spec).serve(net, Fitted(), spec, [])[0] is net  # nothing was fitted


def test_the_logged_text_model_reads_sentences_behind_its_tokenizer(tmp_path, monkeypatch):
    from deeprig.data.text import text_arrays

    spec = _tiny_spec("text", tmp_path, monkeypatch)
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
