"""What runs on an actor of the pool: the model loaded once, then each batch of rows read
by the input's reader and scored into the output's columns. A row its reader cannot read
fails the job naming it, or with `skip_bad_rows` is left out and sent to the driver."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.inputs import PREDICTION

if TYPE_CHECKING:
    from deeprig.runners.predict.inputs import BadRows, PredictInput, Reader
    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec


class UnreadableRow(ValueError):
    """A row of the input that its reader could not read, mid-stream."""


def output_columns(model: PredictModel, spec: PredictSpec, found: PredictInput) -> list[str]:
    """The output's columns, in order: the columns passed through (ids, a file's path),
    the label (when the input has it), `prediction` (a forecast of several steps: one
    label and one prediction column per step), and with `proba` one proba_<class> per
    class."""
    columns = [*found.passed]
    columns += [c for c in found.label_columns if c not in columns]
    columns += found.predictions
    if spec.proba and model.classes is not None:
        columns += [f"proba_{c}" for c in model.classes]
    return columns


class Predictor:
    """One actor of the pool: the model loaded once; each batch scored is stamped with the
    actor's timing (timing.py), which the driver reads off and drops."""

    def __init__(
        self,
        model: PredictModel,
        reader: Reader,
        key: str | None,
        tracking_uri: str | None,
        columns: list[str],
        threads: int,
        skipped: Any = None,  # a Ray queue for the rows left out; None: a bad row fails
        predictions: tuple[str, ...] = (PREDICTION,),  # the answer's columns
    ):
        import time

        import torch

        from deeprig.runners.predict.timing import ActorClock

        began = time.time()
        torch.set_num_threads(threads)
        self.model, self.reader, self.key = model, reader, key
        self.columns, self.skipped, self.predictions = columns, skipped, predictions
        self.pyfunc = _load(model, tracking_uri)
        self.clock = ActorClock.since(began)

    def __call__(self, batch: Any) -> Any:
        import time

        began = time.perf_counter()
        features, bad = self.reader.features(self.model, batch)
        if bad:
            batch = without_bad_rows(batch, bad, self.key, self.skipped)
        read = time.perf_counter()
        frame = predict_frame(
            self.pyfunc, self.model, features, batch, self.columns, self.predictions
        )
        return self.clock.stamp(frame, read - began, time.perf_counter() - read)


def without_bad_rows(batch: Any, bad: BadRows, key: str | None, skipped: Any) -> Any:
    """`batch` less the rows its reader could not read, each sent to `skipped` named by
    its `key` column; UnreadableRow naming the first when there is no `skipped`."""
    named = [(str(batch[key].iloc[row]) if key else f"row {row}", why) for row, why in bad]
    if skipped is None:
        name, why = named[0]
        raise UnreadableRow(
            f"{name} cannot be read ({why}); remove it, or score the rest with "
            "--skip-bad-rows (skip_bad_rows: true)"
        )
    skipped.put(named)
    return batch.drop(index=batch.index[[row for row, _ in bad]])


def _load(model: PredictModel, tracking_uri: str | None) -> Any:
    if model.uri is not None:
        from deeprig.tracking.model_source import load_scorer

        assert tracking_uri is not None
        return load_scorer(model.uri, tracking_uri, model.config)
    from deeprig.runners.train_record import servable_model
    from deeprig.tracking.torch_pyfunc import TorchPyfunc
    from deeprig.training.state import TrainState

    assert model.checkpoint is not None
    network, _, _ = servable_model(TrainState.load(model.checkpoint))
    return TorchPyfunc(network.eval(), model.config)


def predict_frame(
    pyfunc: Any,
    model: PredictModel,
    features: Any,
    batch: Any,
    columns: list[str],
    predictions: tuple[str, ...] = (PREDICTION,),
) -> Any:
    """`features` (what the pyfunc reads, of the rows of `batch`) scored: a DataFrame of
    `columns`, the passed-through ones taken from `batch`, the answers in `predictions`
    (a forecast's (rows, steps): one column per step)."""
    import numpy as np
    import pandas as pd

    out = pd.DataFrame(index=batch.index)
    for name in columns:
        if name in batch.columns:
            out[name] = batch[name]
    out = out.reset_index(drop=True)
    classes = model.classes
    if len(out) == 0:
        for name in predictions:
            out[name] = pd.Series(dtype="float64" if classes is None else "object")
        for name in (c for c in columns if c.startswith("proba_")):
            out[name] = pd.Series(dtype="float64")
        return out
    if classes is None:
        values = np.asarray(pyfunc.predict(features))
        if len(predictions) > 1:
            for step, name in enumerate(predictions):
                out[name] = values[:, step]
        else:
            out[PREDICTION] = values if values.ndim == 1 else list(values)
        return out
    probabilities = np.asarray(pyfunc.predict(features, params={"proba": True}))
    out[PREDICTION] = np.asarray(classes)[probabilities.argmax(axis=1)]
    for i, name in enumerate(classes):
        if f"proba_{name}" in columns:
            out[f"proba_{name}"] = probabilities[:, i]
    return out
