"""A folder of files, one row each (images, audio clips): labelled sub-folders, one per
class of the model, or files anywhere under the folder (no labels). Every file's header
is read before Ray starts (unreadable ones: how many, the first); the rows streamed are
the paths, read on the actors, where a file that fails to decode is a bad row. The output
names each row by its file's `path`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.inputs import BadRows, PredictInput, block_rows
from deeprig.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    import numpy as np

    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec

PATH = "path"
LABEL = "label"  # the class sub-folder a file is in, in a labelled folder


@dataclass(frozen=True)
class FolderFiles:
    paths: list[str]
    labels: list[str] | None  # each file's class folder, in a labelled folder


def list_folder(path: str, suffixes: tuple[str, ...], classes: list[Any] | None) -> FolderFiles:
    """Every file under `path` with one of `suffixes`, sorted; labelled when each lies in
    a sub-folder named after one of the model's classes."""
    import pyarrow.fs as pafs

    from deeprig.data.images import class_of, folder_root

    filesystem, root = folder_root(path)
    if filesystem.get_file_info(root).type != pafs.FileType.Directory:
        raise SpecError([Problem("input", f"no folder at {path!r}: give the folder of files")])
    paths = sorted(
        entry.path
        for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        if entry.type == pafs.FileType.File and entry.path.lower().endswith(suffixes)
    )
    if not paths:
        raise SpecError(
            [Problem("input", f"no {', '.join(suffixes[:3])}, ... files under {path!r}")]
        )
    folders = [class_of(p, root) for p in paths]
    names = {str(c) for c in classes or []}
    nested = all(p.lstrip("/")[len(root.lstrip("/")) :].strip("/").count("/") for p in paths)
    labelled = nested and bool(names) and set(folders) <= names
    if "://" in path:  # (named as the user named the folder: a URI)
        paths = [f"{path.split('://', 1)[0]}://{p.lstrip('/')}" for p in paths]
    return FolderFiles(paths, folders if labelled else None)


def check_headers(paths: list[str], readable: Callable[[str], bool], what: str) -> None:
    """Every file's header read: SpecError naming how many cannot be, and the first."""
    bad = [p for p in paths if not readable(p)]
    if bad:
        raise SpecError(
            [
                Problem(
                    "input",
                    f"{len(bad)} of {len(paths)} files are not readable {what}, the first: "
                    f"{bad[0]!r}; remove or replace them",
                )
            ]
        )


def folder_input(spec: PredictSpec, files: FolderFiles) -> PredictInput:
    columns = {PATH: "string", **({LABEL: "string"} if files.labels else {})}
    label = LABEL if files.labels else None
    return PredictInput(
        files.paths, columns, len(files.paths), label, [PATH], key=PATH, labels=files.labels
    )


def folder_rows(
    spec: PredictSpec, model: PredictModel, found: PredictInput, read_cpus: float
) -> Any:
    """The paths (and labels) as a Ray Dataset in blocks, in order."""
    import pyarrow as pa
    import ray.data

    paths, labels = found.files, found.labels
    size = block_rows(len(paths), spec.workers, spec.batch_size)
    blocks = []
    for start in range(0, len(paths), size):
        part = {PATH: paths[start : start + size]}
        if labels is not None:
            part[LABEL] = labels[start : start + size]
        blocks.append(pa.table(part))
    return ray.data.from_arrow(blocks)


def read_each(
    paths: list[str], read: Callable[[list[str]], np.ndarray]
) -> tuple[np.ndarray, BadRows]:
    """`read` of the batch's files at once; when that fails, file by file, so that the
    bad ones are named and the others kept."""
    import numpy as np

    try:
        return read(paths), []
    except Exception:  # noqa: BLE001 (any decoder's error: found file by file below)
        pass
    arrays, bad = [], []
    for row, path in enumerate(paths):
        try:
            arrays.append(read([path]))
        except Exception as exc:  # noqa: BLE001
            bad.append((row, f"{type(exc).__name__}: {exc}"))
    return (np.concatenate(arrays) if arrays else np.zeros((0,))), bad


def file_opener(path: str) -> Callable[[str], Any]:
    """What hands a decoder one of the folder's files: a local path as it is, a URI's file
    read whole."""
    from deeprig.data.images import folder_root, open_image_file

    filesystem, _ = folder_root(path)

    def open_file(name: str) -> Any:
        return open_image_file(filesystem, name.split("://", 1)[-1])

    return open_file


def check_folder(
    spec: PredictSpec,
    model: PredictModel,
    suffixes: tuple[str, ...],
    readable: Callable[[str], bool],
    what: str,
) -> PredictInput:
    files = list_folder(spec.input, suffixes, model.classes)
    check_headers(files.paths, readable, what)
    if spec.id_columns:
        raise SpecError(
            [Problem("id_columns", f"a folder of {what} has no columns: each row is its `path`")]
        )
    return folder_input(spec, files)
