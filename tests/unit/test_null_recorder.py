"""Tracking off is a recorder and a sink that keep nothing, with the real ones' interface:
a body calls them the same way whether tracking is on or off."""

from __future__ import annotations

import inspect

import pytest
from deeprig.runners.contract import closed_on_failure
from deeprig.tracking.null import NullRecorder, NullSink
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.sink import MlflowMetricsSink
from deeprig.tracking.tags import RunStatus


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("null", "real"), [(NullRecorder, RunRecorder), (NullSink, MlflowMetricsSink)]
)
def test_every_null_method_is_the_real_ones_with_its_parameters(null, real):
    real_methods = _public_methods(real)
    for name, signature in _public_methods(null).items():
        assert name in real_methods, f"{real.__name__} has no {name}"
        assert list(signature.parameters) == list(real_methods[name].parameters), name


def test_a_null_recorder_keeps_nothing_and_is_falsy():
    recorder = NullRecorder()
    assert not recorder and recorder.run_id is None
    recorder.set_tags({"a": "b"})
    recorder.log_metrics({"x": 1.0}, step=3)
    recorder.log_params({"p": "1"})
    recorder.finish(RunStatus.FINISHED)
    assert recorder.page_url() is None and recorder.child_runs() == {}
    sink = recorder.metrics_sink()
    sink.log({"x": 1.0}, step=0)
    sink.log_step({"step/x": 1.0}, step=5)
    sink.tag("k", "v")
    sink.flush()
    with recorder.system_metrics():
        pass


def test_a_failure_under_a_null_recorder_still_propagates():
    with pytest.raises(ValueError), closed_on_failure(NullRecorder()):
        raise ValueError("boom")
