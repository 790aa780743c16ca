"""Data: built-in data sets, Parquet via Ray Data, the train/validation split, and how a
worker turns its shard into batches.

Every source ends up as two Ray Datasets with the same two columns, `x` (one sample's
features, in their natural shape) and `y` (class id or regression target), so the
training loop reads one format whatever the source.
"""

from deeprig.data.info import DataInfo, DataProblem
from deeprig.data.sources import build_datasets, describe_data

__all__ = ["DataInfo", "DataProblem", "build_datasets", "describe_data"]
