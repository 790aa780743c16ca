"""The `data` section of a train spec: one model per source, looked up by `source`. The
README's reference is generated from them (spec/reference.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from deeprig.spec.common import StrictModel, Target


class _DataBase(StrictModel):
    val_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of rows held out for validation."
    )
    cache: Literal["auto", "memory", "stream"] = Field(
        default="auto",
        description=(
            "How workers consume their shard: `memory` reads it once into tensors and reuses "
            "it every epoch, `stream` pulls it through Ray Data every epoch, `auto` picks "
            "memory when a shard fits in 512 MiB."
        ),
    )


class DigitsData(_DataBase):
    source: Literal["builtin:digits"] = Field(
        description="scikit-learn's 8x8 handwritten digits (1797 images, 10 classes)."
    )


class SyntheticData(_DataBase):
    source: Literal["builtin:synthetic"] = Field(
        description="Generated data of any size (for benchmarks and smoke tests)."
    )
    num_samples: int = Field(default=4096, ge=16, description="Rows to generate.")
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        default=[32], min_length=1, max_length=3, description="Shape of one sample's features."
    )
    num_classes: int = Field(
        default=10, ge=0, description="Classes; 0 makes a regression target instead."
    )


# What `standardize` does, for every source of tables.
STANDARDIZE = (
    "Scale scalar feature columns to mean 0, std 1 with statistics of the training split "
    "(recorded in the run, applied by the logged model)."
)


class ParquetData(_DataBase):
    source: Literal["parquet"] = Field(
        description="A table in Parquet or CSV (by the files' extension), read by Ray Data."
    )
    path: str = Field(
        min_length=1,
        description=(
            "File, folder or URI (s3://, gs://, ...) of Parquet files, or of .csv files "
            "(compressed too)."
        ),
    )
    features: list[str] = Field(
        min_length=1,
        description="Feature columns: several scalar columns, or one fixed-size list column.",
    )
    label: str = Field(min_length=1, description="Label column.")
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto",
        description="`auto`: integer labels mean classification (ids 0..K-1), floats regression.",
    )
    feature_shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        description="Reshape each sample's features, e.g. [8, 8] for a CNN or an LSTM.",
    )
    standardize: bool = Field(default=True, description=STANDARDIZE)


class AugmentSpec(StrictModel):
    flip: bool = Field(default=False, description="Random horizontal flips.")
    crop_padding: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Random crops of the image padded by this many pixels (0: none).",
    )


class ImagesData(_DataBase):
    source: Literal["images"] = Field(
        description=(
            "Images read by Ray Data: a folder with one sub-folder per class (PNG, JPEG, ...), "
            "or Parquet with an image-bytes column."
        )
    )
    path: str = Field(
        min_length=1, description="The class folders' parent, or Parquet file/folder, or a URI."
    )
    image_column: str | None = Field(
        default=None, description="Parquet: the column of encoded image bytes."
    )
    label: str | None = Field(
        default=None, description="Parquet: the label column (class names or ids)."
    )
    image_size: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[height, width] every image is resized to (needed when sizes differ).",
    )
    channels: Literal[1, 3] = Field(default=1, description="1: greyscale, 3: RGB.")
    normalize: bool = Field(
        default=True,
        description="Per-channel mean/std of the training split subtracted (recorded).",
    )
    augment: AugmentSpec = Field(
        default_factory=AugmentSpec, description="Train-time augmentation, done on the workers."
    )
    test_path: str | None = Field(
        default=None,
        description=(
            "A held-out test set in the same layout: the best model is scored on it at the end "
            "(test_accuracy, test_f1_macro)."
        ),
    )

    @model_validator(mode="after")
    def _parquet_names_columns(self) -> ImagesData:
        if (self.image_column is None) != (self.label is None):
            raise ValueError("image_column and label go together (Parquet with image bytes)")
        return self


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class MaskSpec(StrictModel):
    time_mask: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Frames of each training clip's spectrogram masked, up to this many (0: none).",
    )
    freq_mask: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Mel bands of each training clip's spectrogram masked, up to this many.",
    )


class AudioData(_DataBase):
    source: Literal["audio"] = Field(
        description=(
            "Sound clips as log-mel spectrograms: a folder with one sub-folder per class "
            f"({', '.join(AUDIO_SUFFIXES)} files), or a CSV/Parquet of file paths and labels."
        )
    )
    path: str = Field(
        min_length=1,
        description="The class folders' parent, or a .csv/.parquet table (paths relative to it).",
    )
    path_column: str = Field(default="path", min_length=1, description="Table: the file column.")
    label: str = Field(default="label", min_length=1, description="Table: the label column.")
    sample_rate: int | None = Field(
        default=None,
        ge=1000,
        le=192_000,
        description="Hz every clip is resampled to (needed when the files' rates differ).",
    )
    duration_s: float = Field(
        default=1.0, gt=0.0, le=60.0, description="Seconds every clip is padded or cut to."
    )
    n_mels: int = Field(default=40, ge=4, le=256, description="Mel bands of the spectrogram.")
    window_ms: float = Field(default=25.0, gt=0.0, le=1000.0, description="STFT window length.")
    hop_ms: float = Field(default=10.0, gt=0.0, le=1000.0, description="STFT hop between frames.")
    view: Literal["frames", "image"] = Field(
        default="frames",
        description=(
            "`frames`: (frames, n_mels), time steps for an LSTM/GRU or transformer, a "
            "1-channel image for a CNN; `image`: (1, n_mels, frames), the spectrogram as "
            "a picture (for your own model)."
        ),
    )
    masking: MaskSpec = Field(
        default_factory=MaskSpec,
        description=(
            "SpecAugment's time and frequency masks on training clips (augmentation, done on "
            "the workers)."
        ),
    )
    val_path: str | None = Field(
        default=None,
        description=(
            "A validation set in the same layout (e.g. speakers never in training) instead of "
            "a random val_fraction of path."
        ),
    )
    test_path: str | None = Field(
        default=None,
        description=(
            "A held-out test set in the same layout: the best model is scored on it at the end "
            "(test_accuracy, test_f1_macro)."
        ),
    )

    @model_validator(mode="after")
    def _hop_within_window(self) -> AudioData:
        if self.hop_ms > self.window_ms:
            raise ValueError("hop_ms is longer than window_ms: samples between frames are lost")
        return self


class TokenizerSpec(StrictModel):
    kind: Literal["word", "bpe", "byte_bpe"] = Field(
        default="word",
        description=(
            "Hugging Face `tokenizers` model: word-level, BPE over words, or byte-level BPE "
            "(every byte of the text kept, spaces and newlines too: what a language model "
            "that writes text back needs)."
        ),
    )
    vocab_size: int = Field(
        default=20000, ge=8, le=1_000_000, description="Largest vocabulary learned."
    )
    max_length: int = Field(
        default=64,
        ge=1,
        le=8192,
        description="Tokens per text: longer ones are cut, shorter padded (classification).",
    )
    lowercase: bool = Field(default=True, description="Lower-case (and strip accents) first.")
    min_frequency: int = Field(
        default=1, ge=1, description="Tokens seen fewer times in training text stay unknown."
    )


class TextData(_DataBase):
    source: Literal["text"] = Field(
        description=(
            "Texts in CSV or Parquet, labelled or a corpus; a tokenizer is trained on the "
            "training split."
        )
    )
    path: str = Field(min_length=1, description="A .csv/.parquet file or a folder of them.")
    text: str = Field(min_length=1, description="The text column.")
    task: Literal["classification", "language_model"] = Field(
        default="classification",
        description=(
            "`classification`: each text's label. `language_model`: the next token at every "
            "position, the rows read as one corpus in order (its last val_fraction of "
            "characters, whole rows, validates) in windows of block_size tokens."
        ),
    )
    label: str | None = Field(
        default=None,
        min_length=1,
        description="The label column (class names or ids); classification only.",
    )
    block_size: int = Field(
        default=128,
        ge=2,
        le=8192,
        description="`language_model`: tokens per training window (the model's context).",
    )
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec, description="Tokenizer.")

    @model_validator(mode="after")
    def _labels_for_classification_only(self) -> TextData:
        if self.task == "classification" and self.label is None:
            raise ValueError(
                "label: required for classification (the label column), or set "
                "task: language_model to learn the text itself"
            )
        if self.task == "language_model" and self.label is not None:
            raise ValueError(
                "label: a language model's labels are the text's own next tokens; remove it"
            )
        return self


class TimeseriesData(_DataBase):
    source: Literal["timeseries"] = Field(
        description=(
            "One or more series (CSV or Parquet rows in time order) cut into sliding windows; "
            "the last val_fraction of windows validates (a chronological split)."
        )
    )
    path: str = Field(min_length=1, description="A .csv or .parquet file.")
    columns: list[str] = Field(
        min_length=1, description="Input series, one column each (the target may be one)."
    )
    target: str = Field(min_length=1, description="The series to forecast.")
    window: int = Field(default=24, ge=1, le=100_000, description="Past time steps read.")
    horizon: int = Field(
        default=1,
        ge=1,
        le=100_000,
        description="Steps forecast: the target at each of the next `horizon` rows.",
    )
    forecast: Literal["change", "level"] = Field(
        default="change",
        description=(
            "`change`: the model reads each window relative to its last row and forecasts "
            "the target's change from its last value (a trend never leaves the range it "
            "trained on); `level`: raw windows in, the target's value out."
        ),
    )
    scale: bool = Field(
        default=True,
        description=(
            "Scale inputs and target to std 1 (level: also mean 0) with statistics of the "
            "training part only; metrics stay in the series' own units."
        ),
    )

    @model_validator(mode="after")
    def _change_of_an_input(self) -> TimeseriesData:
        if self.forecast == "change" and self.target not in self.columns:
            raise ValueError(
                f"forecast: change reads the target's last value: add {self.target!r} to "
                "columns, or set forecast: level"
            )
        return self


class PythonData(_DataBase):
    source: Literal["python"] = Field(
        description="Your own data function, found on `code.paths`, called once on the driver."
    )
    target: Target = Field(
        description=(
            "module:attr of a function returning (features, labels) numpy arrays, a pandas "
            "DataFrame or pyarrow Table (with `features` and `label`), a ray.data.Dataset, "
            "or a torch Dataset of (x, y) pairs."
        ),
    )
    args: dict[str, Any] = Field(default_factory=dict, description="Its keyword arguments.")
    features: list[str] | None = Field(
        default=None,
        description="Feature columns of a DataFrame, Table or Ray Dataset (a Dataset: `x`).",
    )
    label: str | None = Field(
        default=None, description="Label column of a DataFrame, Table or Ray Dataset (`y`)."
    )
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto",
        description="`auto`: integer labels mean classification (ids 0..K-1), floats regression.",
    )
    standardize: bool = Field(
        default=True,
        description=f"{STANDARDIZE} (A DataFrame or Table; arrays are taken as given.)",
    )


DataSpec = Annotated[
    DigitsData
    | SyntheticData
    | ParquetData
    | PythonData
    | ImagesData
    | TextData
    | TimeseriesData
    | AudioData,
    Field(discriminator="source"),
]
# Every data class (the union's members), for code that dispatches on the source.
DATA_CONFIGS: tuple[type[StrictModel], ...] = get_args(get_args(DataSpec)[0])
