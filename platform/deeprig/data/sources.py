"""The one table of data sources: each data class of the spec -> what its source does.
Every step that depends on the source looks its row up here (no fallback: a unit test
keeps `SOURCES` equal to the spec's data union, so a source without a row fails a test,
not a user). A new source is its spec class, one module, and one row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from deeprig.data.audio import audio_model, audio_samples, build_audio, describe_audio
from deeprig.data.builtin import (
    describe_digits,
    describe_synthetic,
    digits_arrays,
    synthetic_arrays,
)
from deeprig.data.images import build_images, describe_images, image_samples
from deeprig.data.info import DataInfo, Fitted
from deeprig.data.parquet import describe_parquet, parquet_datasets, parquet_samples
from deeprig.data.pipeline import BuildOptions, PreparedData, from_arrays, split_arrays
from deeprig.data.python import describe_python, python_datasets
from deeprig.data.python import first_samples as python_samples
from deeprig.data.standardize import standardized_model
from deeprig.data.text import describe_text, text_arrays, text_model, text_samples
from deeprig.data.timeseries import describe_series, series_arrays, series_model
from deeprig.spec.data import (
    AudioData,
    DataSpec,
    DigitsData,
    ImagesData,
    ParquetData,
    PythonData,
    SyntheticData,
    TextData,
    TimeseriesData,
)

if TYPE_CHECKING:
    from torch import nn

S = TypeVar("S")

# (the model MLflow serves, whether torch.export may trace it, its extra pip requirements)
ServableModel = tuple["nn.Module", bool, list[str]]


@dataclass(frozen=True)
class Source(Generic[S]):
    # What the driver learns before Ray starts (raises DataProblem: exit 2).
    describe: Callable[[S], DataInfo]
    # The splits, preprocessing fitted on the training split.
    build: Callable[[S, DataInfo, BuildOptions], PreparedData]
    # (spec, info, count) -> a few real samples as the model reads them (the dry run).
    samples: Callable[[S, DataInfo, int], np.ndarray]
    # Where its rows come from: the source of the splits' MLflow datasets.
    origin: Callable[[S], str]
    # (network, fitted, spec, class names) -> the logged model, reading raw inputs.
    serve: Callable[[nn.Module, Fitted, S, list[str]], ServableModel]


def _standardized(net: nn.Module, fitted: Fitted, spec: Any, classes: list[str]):
    return standardized_model(net, fitted)


SOURCES: dict[type, Source[Any]] = {
    DigitsData: Source[DigitsData](
        describe_digits,
        build=lambda spec, info, how: split_arrays(*digits_arrays(), spec.val_fraction, how),
        samples=lambda spec, info, count: digits_arrays()[0][:count],
        origin=lambda spec: "sklearn.datasets:load_digits",
        serve=_standardized,
    ),
    SyntheticData: Source[SyntheticData](
        describe_synthetic,
        build=lambda spec, info, how: split_arrays(
            *synthetic_arrays(spec, how.seed), spec.val_fraction, how
        ),
        samples=lambda spec, info, count: synthetic_arrays(spec, 0)[0][:count],
        origin=lambda spec: "deeprig.data.builtin:synthetic_arrays",
        serve=_standardized,
    ),
    ParquetData: Source[ParquetData](
        describe_parquet,
        build=parquet_datasets,
        samples=parquet_samples,
        origin=lambda spec: spec.path,
        serve=_standardized,
    ),
    PythonData: Source[PythonData](
        describe_python,
        build=python_datasets,
        samples=lambda spec, info, count: python_samples(spec, count),
        origin=lambda spec: str(spec.target),
        serve=_standardized,
    ),
    ImagesData: Source[ImagesData](
        describe_images,
        build=build_images,
        samples=image_samples,
        origin=lambda spec: spec.path,
        serve=_standardized,
    ),
    TextData: Source[TextData](
        describe_text,
        build=lambda spec, info, how: from_arrays(
            how.num_workers, *text_arrays(spec, info, how.seed)
        ),
        samples=text_samples,
        origin=lambda spec: spec.path,
        serve=text_model,
    ),
    TimeseriesData: Source[TimeseriesData](
        describe_series,
        build=lambda spec, info, how: from_arrays(how.num_workers, *series_arrays(spec, info)),
        samples=lambda spec, info, count: series_arrays(spec, info)[0][0][:count],
        origin=lambda spec: spec.path,
        serve=series_model,
    ),
    AudioData: Source[AudioData](
        describe_audio,
        build=build_audio,
        samples=audio_samples,
        origin=lambda spec: spec.path,
        serve=audio_model,
    ),
}


def source_of(spec: DataSpec) -> Source[Any]:
    return SOURCES[type(spec)]


def describe_data(spec: DataSpec) -> DataInfo:
    """Shape, task, classes and sizes, learned on the driver (so bad data exits 2)."""
    return source_of(spec).describe(spec)


def build_datasets(
    spec: DataSpec,
    info: DataInfo,
    seed: int,
    num_workers: int,
    data_cpus: float,
    in_memory: bool = False,
) -> PreparedData:
    """The splits of a data spec, preprocessing fitted on the training split
    (`BuildOptions` says what the sizes ask for)."""
    how = BuildOptions(seed, num_workers, data_cpus, in_memory)
    return source_of(spec).build(spec, info, how)


def first_samples(spec: DataSpec, info: DataInfo, count: int = 2) -> np.ndarray:
    """A few real samples of any source, in the shape the model reads: what the dry run
    of a user's model is fed before Ray starts."""
    return source_of(spec).samples(spec, info, count)
