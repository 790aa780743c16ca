"""Images: a folder of class sub-folders (torchvision's `ImageFolder` layout) or Parquet with
an image-bytes column, described on the driver (every file's header is read, so a bad file
fails the pre-flight, not epoch 3) and decoded by PIL in Ray tasks into `x` (channels,
height, width) floats in [0, 1] and `y` class ids: once, into arrays, when the workers hold
their shards in memory, else as a Ray Data stream. Per-channel normalisation is fitted on
the training split; augmentation happens on the workers (training/augment.py)."""

from __future__ import annotations

import collections
import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeprig.data.arrow import label_classes
from deeprig.data.builtin import split_indices
from deeprig.data.image_decode import decode_images, decode_pixels
from deeprig.data.info import DataInfo, DataProblem, Fitted, num_val_rows
from deeprig.data.pipeline import BuildOptions, PreparedData, from_arrays
from deeprig.data.standardize import (
    fit_statistics,
    fitted_from_sums,
    pixel_floats,
    pixel_sums,
    standardized,
)
from deeprig.spec.data import ImagesData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Headers read on the driver for Parquet (decoding every row there would read it twice).
_PARQUET_HEADERS_CHECKED = 256
# A folder's file list is cut into blocks of about this many decoded bytes (at least 8, so
# every CPU has work), as pipeline.py sizes in-memory arrays' blocks.
_BLOCK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ImageFolder:
    """An image folder as listed on the driver: where it is, its classes, its files."""

    root: str  # the folder as its filesystem lists its files' paths (no scheme)
    classes: tuple[str, ...]
    files: tuple[str, ...]  # every image file, as a path the folder's filesystem opens
    filesystem: Any

    def open(self, path: str) -> Any:
        return open_image_file(self.filesystem, path)


def open_image_file(filesystem: Any, path: str) -> Any:
    """A file to hand PIL: a local path as it is (PIL then reads the header only)."""
    import pyarrow.fs as pafs

    if isinstance(filesystem, pafs.LocalFileSystem):
        return path
    with filesystem.open_input_file(path) as handle:
        return io.BytesIO(handle.read())


def describe_images(spec: ImagesData) -> DataInfo:
    if spec.image_column is not None:
        return _describe_parquet_images(spec)
    folder = list_image_folder(spec.path, "data.path")
    sizes = _read_headers(folder)
    shape = _sample_shape(spec, sizes)
    num_rows = len(folder.files)
    if spec.test_path is not None:
        test = list_image_folder(spec.test_path, "data.test_path")
        if set(test.classes) - set(folder.classes):
            extra = sorted(set(test.classes) - set(folder.classes))
            raise DataProblem(
                "data.test_path", f"classes {extra} are in the test set but not in data.path"
            )
        _sample_shape(spec, _read_headers(test), "data.test_path")
    return DataInfo(
        shape,
        "classification",
        len(folder.classes),
        num_rows,
        num_val_rows(num_rows, spec.val_fraction),
        classes=folder.classes,
    )


def list_image_folder(path: str, field: str) -> ImageFolder:
    """The class folders under `path` and the image files in each, sorted. Raises
    DataProblem for a missing or empty folder, or a single class."""
    import pyarrow.fs as pafs

    filesystem, root = folder_root(path)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise DataProblem(field, f"no folder at {path!r}")
    if info.type != pafs.FileType.Directory:
        raise DataProblem(
            field,
            f"{path!r} is a file; give the folder that holds one sub-folder per class "
            "(or Parquet with data.image_column and data.label)",
        )
    root = root.rstrip("/")
    by_class: dict[str, list[str]] = collections.defaultdict(list)
    for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        if entry.type != pafs.FileType.File or not entry.path.lower().endswith(IMAGE_EXTENSIONS):
            continue
        relative = entry.path[len(root) :].lstrip("/")
        if "/" in relative:  # (an image beside the class folders belongs to no class)
            by_class[relative.split("/", 1)[0]].append(entry.path)
    if not by_class:
        raise DataProblem(
            field,
            f"no images under {path!r}: expected one sub-folder per class holding "
            f"{', '.join(IMAGE_EXTENSIONS[:3])}, ... files (e.g. {path}/cat/001.png)",
        )
    if len(by_class) == 1:
        (only,) = by_class
        raise DataProblem(
            field,
            f"only one class folder ({only!r}) under {path!r}: classification needs at least "
            "two, one sub-folder per class",
        )
    classes = tuple(sorted(by_class))
    files = tuple(f for c in classes for f in sorted(by_class[c]))
    return ImageFolder(root, classes, files, filesystem)


def folder_root(path: str) -> tuple[Any, str]:
    """(its filesystem, the folder as that filesystem lists its files' paths)."""
    import pyarrow.fs as pafs

    if "://" in path:
        filesystem, root = pafs.FileSystem.from_uri(path)
        return filesystem, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(path).rstrip("/")


def class_of(path: str, root: str) -> str:
    """The class of an image file: its first folder under the root (with or without a
    leading slash on either)."""
    return path.lstrip("/")[len(root.lstrip("/")) :].lstrip("/").split("/", 1)[0]


def _read_headers(folder: ImageFolder) -> collections.Counter:
    """Every file's (width, height), from its header only (no pixel decoding); any mode
    converts to the spec's channels."""
    from PIL import Image, UnidentifiedImageError

    sizes: collections.Counter = collections.Counter()
    unreadable: list[str] = []
    for path in folder.files:
        try:
            with Image.open(folder.open(path)) as image:
                sizes[image.size] += 1
        except (UnidentifiedImageError, OSError, ValueError):
            unreadable.append(path)
    if unreadable:
        raise DataProblem(
            "data.path",
            f"{len(unreadable)} of {len(folder.files)} files are not readable images, the "
            f"first: {unreadable[0]!r}; remove or replace them",
        )
    return sizes


def _sample_shape(
    spec: ImagesData, sizes: collections.Counter, field: str = "data.path"
) -> tuple[int, int, int]:
    if spec.image_size is not None:
        return (spec.channels, spec.image_size[0], spec.image_size[1])
    if len(sizes) > 1:
        common = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(3))
        raise DataProblem(
            "data.image_size",
            f"the images under {field} have {len(sizes)} sizes ({common}, ...); set "
            "data.image_size: [height, width] to resize them all",
        )
    ((width, height),) = sizes
    return (spec.channels, height, width)


def _describe_parquet_images(spec: ImagesData) -> DataInfo:
    import pyarrow as pa
    import pyarrow.dataset as pads
    from PIL import Image, UnidentifiedImageError

    assert spec.image_column is not None and spec.label is not None
    try:
        dataset = pads.dataset(spec.path, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise DataProblem("data.path", f"cannot read Parquet at {spec.path!r}: {exc}") from None
    for field, column in (("data.image_column", spec.image_column), ("data.label", spec.label)):
        if column not in dataset.schema.names:
            raise DataProblem(
                field, f"no column {column!r} (columns: {', '.join(dataset.schema.names)})"
            )
    if not pa.types.is_binary(dataset.schema.field(spec.image_column).type) and not (
        pa.types.is_large_binary(dataset.schema.field(spec.image_column).type)
    ):
        raise DataProblem("data.image_column", f"{spec.image_column!r} is not a column of bytes")
    head = dataset.head(_PARQUET_HEADERS_CHECKED, columns=[spec.image_column])
    sizes: collections.Counter = collections.Counter()
    for row, blob in enumerate(head.column(spec.image_column).to_pylist()):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                sizes[image.size] += 1
        except (UnidentifiedImageError, OSError, TypeError):
            raise DataProblem(
                "data.image_column", f"row {row} of {spec.image_column!r} is not a readable image"
            ) from None
    labels = dataset.to_table(columns=[spec.label]).column(spec.label)
    classes = label_classes(labels, "data.label")
    num_rows = len(labels)
    return DataInfo(
        _sample_shape(spec, sizes),
        "classification",
        len(classes),
        num_rows,
        num_val_rows(num_rows, spec.val_fraction),
        classes=classes,
    )


def build_images(spec: ImagesData, info: DataInfo, how: BuildOptions) -> PreparedData:
    """An image folder whose shards the workers hold in memory is decoded once into
    arrays; Parquet, or shards streamed, are Ray Datasets."""
    if how.in_memory and spec.image_column is None:
        train, val, test, fitted = image_arrays(spec, info, how.seed, how.data_cpus)
        return from_arrays(how.num_workers, train, val, fitted, test)
    return PreparedData(*image_datasets(spec, info, how.seed, how.data_cpus))


def image_samples(spec: ImagesData, info: DataInfo, count: int) -> np.ndarray:
    """The first images, decoded as the pipeline decodes them."""
    if spec.image_column is not None:
        import pyarrow.dataset as pads

        table = pads.dataset(spec.path, format="parquet").head(count, columns=[spec.image_column])
        blobs = table.column(spec.image_column).to_pylist()
    else:
        folder = list_image_folder(spec.path, "data.path")
        blobs = [folder.open(path) for path in folder.files[:count]]
    return decode_images(blobs, info.input_shape)


def image_datasets(spec: ImagesData, info: DataInfo, seed: int, data_cpus: float):
    """(train, validation, test or None, Fitted): Ray Datasets of normalised images,
    streamed (decoded again every epoch)."""
    if spec.image_column is not None:
        decoded = _read_parquet(spec, spec.path, info, data_cpus)
        train, val = decoded.train_test_split(test_size=info.num_val, shuffle=True, seed=seed)
    else:
        folder = list_image_folder(spec.path, "data.path")
        train_rows, val_rows = split_indices(len(folder.files), spec.val_fraction, seed)
        train = _read_folder(folder, train_rows, info, data_cpus)
        val = _read_folder(folder, val_rows, info, data_cpus)
    fitted = Fitted(fitted_on_rows=info.num_train)
    if spec.normalize:
        fitted = fit_statistics(train, (info.input_shape[0], 1, 1), averaged_axes=(1, 2))
        train, val = standardized(train, fitted), standardized(val, fitted)
    return train, val, _test_dataset(spec, info, fitted, data_cpus), fitted


def image_arrays(spec: ImagesData, info: DataInfo, seed: int, data_cpus: float):
    """((x, y) train, (x, y) validation, test Dataset or None, Fitted): an image folder
    whose shards fit in the workers' memory, decoded once into arrays by Ray tasks.

    The workers would read a stream into memory anyway (data.cache), and arrays skip the
    Ray Data executions a stream costs: its statistics pass and every split's start
    (20k 28x28 PNGs to batches, 2 CPUs: 1.3 s against 3.1 s streamed;
    benchmarks/image_ingest.py). The tasks send bytes (a quarter of the floats' size) with
    the sums of their training rows, so the driver's only pass over the pixels is the one
    that makes the normalised floats."""
    import ray

    folder = list_image_folder(spec.path, "data.path")
    train_rows, val_rows = split_indices(len(folder.files), spec.val_fraction, seed)
    paths, labels = _labelled(folder, np.concatenate([train_rows, val_rows]))
    num_train = len(train_rows)  # (the first rows of `paths`)
    summed = num_train if spec.normalize else 0  # rows whose channel sums a task sends
    decode = ray.remote(num_cpus=data_cpus)(_decode_block)
    blocks = ray.get(
        [
            decode.remote(
                folder.filesystem,
                [paths[i] for i in part],
                info.input_shape,
                int(np.clip(summed - part[0], 0, len(part))),
            )
            for part in np.array_split(np.arange(len(paths)), _num_blocks(len(paths), info))
        ]
    )
    fitted = Fitted(fitted_on_rows=num_train)
    if spec.normalize:
        sums = [block_sums for _, block_sums in blocks if block_sums is not None]
        fitted = fitted_from_sums(sums, (info.input_shape[0], 1, 1))
    pixels = np.concatenate([block_pixels for block_pixels, _ in blocks])
    x = pixel_floats(pixels, fitted if spec.normalize else None)
    train, val = slice(0, num_train), slice(num_train, len(paths))
    test = _test_dataset(spec, info, fitted, data_cpus)
    return (x[train], labels[train]), (x[val], labels[val]), test, fitted


def _decode_block(filesystem: Any, paths: list[str], shape: tuple[int, ...], summed: int):
    """(the files' (rows, C, H, W) bytes, the per-channel sums of the first `summed` of
    them, or None when that is none)."""
    pixels = decode_pixels([open_image_file(filesystem, p) for p in paths], shape)
    return pixels, pixel_sums(pixels[:summed], averaged_axes=(1, 2)) if summed else None


def _test_dataset(spec: ImagesData, info: DataInfo, fitted: Fitted, data_cpus: float):
    """data.test_path as a stream (scored once, on the driver), normalised as training was."""
    if spec.test_path is None:
        return None
    if spec.image_column is not None:
        test = _read_parquet(spec, spec.test_path, info, data_cpus)
    else:
        folder = list_image_folder(spec.test_path, "data.test_path")
        test = _read_folder(folder, np.arange(len(folder.files)), info, data_cpus)
    return standardized(test, fitted) if spec.normalize else test


def _read_folder(folder: ImageFolder, rows: np.ndarray, info: DataInfo, data_cpus: float):
    """The folder's files at `rows`, in that order, decoded by Ray Data tasks.

    The driver already holds the file list (the pre-flight read every header), so the
    dataset is that list in blocks, decoded by PIL in `map_batches`. Ray Data's own
    `read_images` costs ~0.5 ms of bookkeeping per file (20k 28x28 PNGs: 9.7 s, where PIL
    in two tasks takes 0.7 s), and its split afterwards is a full shuffle; a seeded
    permutation of the list is the same split for nothing.
    """
    import pyarrow as pa
    import ray.data

    paths, labels = _labelled(folder, rows)
    blocks = [
        pa.table({"path": [paths[i] for i in part], "y": labels[part]})
        for part in np.array_split(np.arange(len(paths)), _num_blocks(len(paths), info))
    ]
    shape, filesystem = info.input_shape, folder.filesystem  # (not the whole file list)

    def decode(batch) -> dict[str, np.ndarray]:
        return {"x": _decode_files(filesystem, batch["path"], shape), "y": batch["y"]}

    return ray.data.from_arrow(blocks).map_batches(
        decode, batch_format="numpy", batch_size=None, num_cpus=data_cpus
    )


def _labelled(folder: ImageFolder, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(the files at `rows`, their class ids)."""
    class_ids = {name: i for i, name in enumerate(folder.classes)}
    paths = [folder.files[i] for i in rows]
    return paths, np.array([class_ids[class_of(p, folder.root)] for p in paths], dtype=np.int64)


def _num_blocks(num_files: int, info: DataInfo) -> int:
    decoded_bytes = num_files * 4 * math.prod(info.input_shape)
    return max(1, min(num_files, max(8, math.ceil(decoded_bytes / _BLOCK_BYTES))))


def _decode_files(filesystem: Any, paths, shape: tuple[int, ...]) -> np.ndarray:
    return decode_images([open_image_file(filesystem, p) for p in paths], shape)


def _read_parquet(spec: ImagesData, path: str, info: DataInfo, data_cpus: float):
    import ray.data

    assert spec.image_column is not None and spec.label is not None
    image_column, label, shape = spec.image_column, spec.label, info.input_shape
    class_ids = {name: i for i, name in enumerate(info.class_names())}

    def decode(batch) -> dict[str, np.ndarray]:
        return {
            "x": decode_images(list(batch[image_column]), shape),
            "y": _ids(batch[label], class_ids),
        }

    return ray.data.read_parquet(
        path, columns=[image_column, label], num_cpus=data_cpus
    ).map_batches(decode, batch_format="numpy", num_cpus=data_cpus)


def _ids(labels: np.ndarray, class_ids: dict[str, int]) -> np.ndarray:
    return np.array([class_ids[str(v)] for v in labels], dtype=np.int64)
