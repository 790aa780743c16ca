"""Images: a folder of class sub-folders (torchvision's `ImageFolder` layout) or Parquet with
an image-bytes column, described on the driver (every file's header is read, so a bad file
fails the pre-flight, not epoch 3) and read by Ray Data (`read_images`) into `x` (channels,
height, width) floats in [0, 1] and `y` class ids. Per-channel normalisation is fitted on
the training split; augmentation happens on the workers (training/augment.py)."""

from __future__ import annotations

import collections
import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeprig.data.arrow import label_classes
from deeprig.data.info import DataInfo, DataProblem, Fitted, num_val_rows
from deeprig.data.standardize import fit_statistics, standardized
from deeprig.spec.data import ImagesData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Headers read on the driver for Parquet (decoding every row there would read it twice).
_PARQUET_HEADERS_CHECKED = 256


@dataclass(frozen=True)
class ImageFolder:
    """An image folder as listed on the driver: where it is, its classes, its files."""

    root: str  # the folder as Ray Data reports its files' paths (no scheme)
    classes: tuple[str, ...]
    files: tuple[str, ...]  # every image file, as a path the folder's filesystem opens
    filesystem: Any

    def open(self, path: str) -> Any:
        """A file to hand PIL: a local path as it is (PIL then reads the header only)."""
        import pyarrow.fs as pafs

        if isinstance(self.filesystem, pafs.LocalFileSystem):
            return path
        with self.filesystem.open_input_file(path) as handle:
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
    """(its filesystem, the folder as Ray Data reports its files' paths)."""
    import pyarrow.fs as pafs

    if "://" in path:
        filesystem, root = pafs.FileSystem.from_uri(path)
        return filesystem, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(path).rstrip("/")


def class_of(path: str, root: str) -> str:
    """The class of an image file: its first folder under the root (Ray Data reports
    local paths without their leading slash)."""
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


def image_datasets(spec: ImagesData, info: DataInfo, seed: int, data_cpus: float):
    """(train, validation, test or None, Fitted): Ray Datasets of normalised images."""
    decoded = _read(spec, spec.path, info, data_cpus)
    train, val = decoded.train_test_split(test_size=info.num_val, shuffle=True, seed=seed)
    fitted = Fitted(fitted_on_rows=info.num_train)
    test = _read(spec, spec.test_path, info, data_cpus) if spec.test_path else None
    if spec.normalize:
        fitted = fit_statistics(train, (info.input_shape[0], 1, 1), averaged_axes=(1, 2))
        train, val = standardized(train, fitted), standardized(val, fitted)
        test = standardized(test, fitted) if test is not None else None
    return train, val, test, fitted


def _read(spec: ImagesData, path: str, info: DataInfo, data_cpus: float):
    import ray.data

    channels, height, width = info.input_shape
    mode = "L" if channels == 1 else "RGB"
    class_ids = {name: i for i, name in enumerate(info.class_names())}
    if spec.image_column is not None and spec.label is not None:
        image_column, label = spec.image_column, spec.label

        def decode(batch) -> dict[str, np.ndarray]:
            from PIL import Image

            images = [
                np.asarray(Image.open(io.BytesIO(b)).convert(mode).resize((width, height)))
                for b in batch[image_column]
            ]
            return {"x": images_chw(np.stack(images), channels), "y": _ids(batch[label], class_ids)}

        return ray.data.read_parquet(
            path, columns=[image_column, label], num_cpus=data_cpus
        ).map_batches(decode, batch_format="numpy", num_cpus=data_cpus)

    # (the pre-flight listed and checked the folder; only its root is needed here)
    _, root = folder_root(path)

    def to_xy(batch) -> dict[str, np.ndarray]:
        names = np.array([class_of(p, root) for p in batch["path"]])
        x = images_chw(np.stack(list(batch["image"])), channels)
        return {"x": x, "y": _ids(names, class_ids)}

    return ray.data.read_images(
        # (the listed root: Ray reports each file's path as it was given its folder)
        root if "://" not in path else path,
        size=(height, width),
        mode=mode,
        include_paths=True,
        file_extensions=[e.lstrip(".") for e in IMAGE_EXTENSIONS],
        num_cpus=data_cpus,
    ).map_batches(to_xy, batch_format="numpy", num_cpus=data_cpus)


def images_chw(images: np.ndarray, channels: int) -> np.ndarray:
    """(rows, H, W) or (rows, H, W, C) bytes -> (rows, C, H, W) floats in [0, 1]."""
    x = images.astype(np.float32) / 255.0
    if x.ndim == 3:
        return x[:, None, :, :]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)[:, :channels])


def _ids(labels: np.ndarray, class_ids: dict[str, int]) -> np.ndarray:
    return np.array([class_ids[str(v)] for v in labels], dtype=np.int64)
