"""A data function's return value (`data.source: python`): read by the first of
RETURN_FORMS that matches it, each form into the same arrays. (A ray.data.Dataset needs Ray:
the integration tests read one.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from deeprig.data.info import DataProblem
from deeprig.data.python import RETURN_FORMS
from deeprig.spec.data import PythonData

SPEC = PythonData(source="python", target="data:rows", features=["a", "b"], label="label")
FEATURES = np.array([[0.1, 1.0], [0.2, 2.0], [0.3, 3.0]], dtype=np.float32)
LABELS = np.array([0, 1, 0])
COLUMNS = {"a": FEATURES[:, 0], "b": FEATURES[:, 1], "label": LABELS}


def _first_form(value):
    return next(form for form in RETURN_FORMS if form.matches(value))


@pytest.mark.parametrize(
    ("returned", "form"),
    [
        ((FEATURES, LABELS), "(features, labels) arrays"),
        ((torch.from_numpy(FEATURES), torch.from_numpy(LABELS)), "(features, labels) arrays"),
        (pd.DataFrame(COLUMNS), "a pandas DataFrame or pyarrow Table"),
        (pa.table(COLUMNS), "a pandas DataFrame or pyarrow Table"),
        (
            torch.utils.data.TensorDataset(torch.from_numpy(FEATURES), torch.from_numpy(LABELS)),
            "a torch Dataset of (x, y) pairs",
        ),
    ],
    ids=["arrays", "tensors", "dataframe", "arrow-table", "torch-dataset"],
)
def test_each_form_reads_the_same_rows(returned, form):
    found = _first_form(returned)
    assert found.named.startswith(form)
    loaded = found.read(returned, SPEC)
    assert loaded.x is not None and loaded.y is not None
    np.testing.assert_allclose(loaded.x, FEATURES)
    np.testing.assert_array_equal(loaded.y, LABELS)


def test_no_form_matches_what_no_data_function_may_return():
    assert not [form.named for form in RETURN_FORMS if form.matches("hello")]
    assert not [form.named for form in RETURN_FORMS if form.matches((FEATURES,))]


def test_a_pair_that_is_no_pair_of_arrays_names_the_shapes():
    with pytest.raises(DataProblem, match=r"features must be \(N, \.\.\.\) and labels \(N,\)"):
        _first_form((FEATURES[0], LABELS)).read((FEATURES[0], LABELS), SPEC)
