"""Write Fashion-MNIST as image folders, the input of jobs/fashion_cnn.yaml.

    apt-get install dataset-fashion-mnist      # the 70k images, 31 MB, MIT licence
    python jobs/make_fashion_images.py         # -> jobs/data/fashion/{train,test}/CLASS/N.png
    python jobs/make_fashion_images.py OUT_DIR

The Debian package ships the original idx files under /usr/share/datasets/fashion-mnist/
(nothing is downloaded). Each image becomes a 28x28 greyscale PNG in a folder named after
its class: 60,000 under train/, the 10,000 test images under test/.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (big-endian header: magic, then one size per dimension) as uint8."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_fashion_folders(out: Path, source: Path = SOURCE, per_class: int | None = None) -> Path:
    """out/{train,test}/CLASS/N.png; `per_class` keeps only the first N images of each
    class in each split (the test suite validates the job on 500 images, not 70k)."""
    if not source.is_dir():
        raise SystemExit(f"{source} not found: apt-get install dataset-fashion-mnist")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        written = [0] * len(CLASSES)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            if per_class is not None and written[label] >= per_class:
                continue
            written[label] += 1
            Image.fromarray(image, mode="L").save(out / split / CLASSES[label] / f"{i:05d}.png")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data/fashion"
    print(f"wrote {write_fashion_folders(target)}/{{train,test}}")
