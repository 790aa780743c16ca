"""User code before Ray starts: every bad-input class exits 2 naming its field and the fix,
and nothing is recorded; the bundle of code.paths is what the run records and ships."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from deeprig.cli import app
from deeprig.usercode import CodeBundle
from deeprig.usercode.signature import bind_arguments
from typer.testing import CliRunner

USER_MODULES = {
    "nets.py": """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, num_outputs: int, input_shape: tuple, width: int = 8):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                                          nn.Linear(width, num_outputs))

            def forward(self, x):
                return self.body(x)

        class WrongOutput(nn.Module):
            def __init__(self, num_outputs: int):
                super().__init__()
                self.lin = nn.Linear(64, 3)

            def forward(self, x):
                return self.lin(x.flatten(1))

        class NeedsDepth(nn.Module):
            def __init__(self, depth: int):
                super().__init__()

        class Expects32(nn.Module):
            def __init__(self, num_outputs: int):
                super().__init__()
                self.lin = nn.Linear(32, num_outputs)

            def forward(self, x):
                return self.lin(x.flatten(1))

        def factory(num_outputs: int, width: int = 8):
            return Net(num_outputs, (8, 8), width)

        class NotAModule:
            pass
    """,
    "data.py": """
        import numpy as np
        import pandas as pd

        def arrays(limit: int = 200):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(limit, 8, 8)).astype("float32")
            return x, (x.sum(axis=(1, 2)) > 0).astype("int64")

        def frame():
            return pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4], "b": [1.0, 2.0, 3.0, 4.0],
                                 "label": [0, 1, 0, 1]})

        def not_data():
            return "hello"
    """,
    "loops.py": """
        def good(config):
            pass

        def two_args(config, other):
            pass
    """,
}

BASE = """
name: user-code
kind: train
code: {paths: [mods]}
model: {name: custom, target: "nets:Net", args: {width: 8}}
data: {source: python, target: "data:arrays"}
optim: {num_epochs: 1}
"""


@pytest.fixture
def user_code(tmp_path: Path) -> Path:
    """A spec file and, beside it, a folder of user modules (`mods/`)."""
    mods = tmp_path / "mods"
    mods.mkdir()
    for name, source in USER_MODULES.items():
        (mods / name).write_text(textwrap.dedent(source))
    spec = tmp_path / "job.yaml"
    spec.write_text(BASE)
    return spec


def validate(spec: Path, *overrides: str):
    args = ["validate", str(spec), *[a for o in overrides for a in ("--set", o)]]
    return CliRunner().invoke(app, args)


def test_a_custom_model_and_data_function_validate(user_code, deeprig_home):
    result = validate(user_code)
    assert result.exit_code == 0, result.output
    assert "nets:Net on python" in result.output


def test_code_paths_are_relative_to_the_spec_file_not_the_cwd(user_code, deeprig_home):
    result = CliRunner().invoke(app, ["validate", str(user_code)], catch_exceptions=False)
    assert result.exit_code == 0, result.output  # (the test's cwd is the repository)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (["model.target=nets"], "model.target", "is not module:attr"),
        (["model.target=nosuch:Net"], "model.target", "no module 'nosuch' on code.paths ("),
        (["model.target=nets:Nett"], "model.target", "did you mean 'Net'?"),
        (["model.target=nets:NotAModule"], "model.target", "not a torch.nn.Module"),
        (["model.args.widht=8"], "model.args.widht", "not a parameter of Net; did you mean"),
        (["model.args.num_outputs=3"], "model.args.num_outputs", "deeprig fills num_outputs"),
        (["model.args.width=wide"], "model.args.width", "does not fit width"),
        (["model.target=nets:NeedsDepth", "model.args={}"], "model.args", "needs 'depth'"),
        (["model.target=nets:WrongOutput", "model.args={}"], "model", "it must return (batch"),
        (["model.target=nets:Expects32", "model.args={}"], "model", "dry run on 2 samples failed"),
        (["data.target=data:not_data"], "data.target", "returned a str; expected"),
        (["data.target=data:frame"], "data.features", "needs data.features and data.label"),
        (
            ["data.target=data:frame", "data.features=[a, c]", "data.label=label"],
            "data.features",
            "column(s) ['c'] not in the data",
        ),
        (["data.args.limt=5"], "data.args.limt", "did you mean 'limit'?"),
        (["code.paths=[nowhere]"], "code.paths.0", "neither a folder nor a .py file"),
    ],
)
def test_bad_user_code_exits_2_naming_the_field(user_code, deeprig_home, overrides, field, message):
    result = validate(user_code, *overrides)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert f"{field}: " in flat and message in flat, result.output
    assert "Traceback" not in result.output


def test_a_factory_function_is_a_model_too(user_code, deeprig_home):
    result = validate(user_code, "model.target=nets:factory")
    assert result.exit_code == 0, result.output


def test_data_frames_with_named_columns_are_data(user_code, deeprig_home):
    result = validate(
        user_code,
        "data.target=data:frame",
        "data.features=[a, b]",
        "data.label=label",
        "model={name: mlp}",
    )
    assert result.exit_code == 0, result.output
    assert "2 outputs" in result.output


LOOP = """
name: own-loop
kind: train
code: {paths: [mods]}
loop: {function: "loops:good", config: {epochs: 2}, metrics: [epoch, loss]}
checkpoint: {metric: loss}
"""


@pytest.fixture
def loop_spec(user_code: Path) -> Path:
    """A spec of the user's own loop that loads its own data (no `data:`), beside `mods/`."""
    spec = user_code.parent / "loop.yaml"
    spec.write_text(LOOP)
    return spec


def test_a_loop_must_take_one_config_argument(loop_spec, deeprig_home):
    result = validate(loop_spec, "loop.function=loops:two_args")
    assert result.exit_code == 2
    assert "loop.function" in result.output and "must take one argument" in result.output


def test_a_loops_checkpoint_metric_must_be_one_it_reports(loop_spec, deeprig_home):
    result = validate(loop_spec, "checkpoint.metric=val_loss")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "checkpoint.metric: 'val_loss' is not reported by the loop" in flat


def test_a_loop_that_loads_its_own_data_needs_no_data_section(loop_spec, deeprig_home):
    result = validate(loop_spec)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "loop loops:good on its own data" in flat


def test_a_model_still_needs_data_naming_the_field_and_the_fix(loop_spec, deeprig_home):
    (loop_spec.parent / "nodata.yaml").write_text("name: x\nkind: train\nmodel: {name: mlp}\n")
    result = validate(loop_spec.parent / "nodata.yaml")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "data: required field is missing, add where the rows come from" in flat
    assert "or name your own loop (loop:)" in flat


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (["optim={lr: 0.1}"], "optim", "your own loop has its own optimiser"),
        (["early_stopping={metric: loss}"], "early_stopping", "your own loop decides when"),
        (["model={name: mlp}"], "model.name", "'mlp' is deeprig's own network"),
        (["checkpoint.every_n_steps=5"], "checkpoint.every_n_steps", "decides when it checkp"),
        (["checkpoint.every_n_epochs=2"], "checkpoint.every_n_epochs", "decides when it checkp"),
        (["scaling.mixed_precision=bf16"], "scaling.mixed_precision", "decides its precision"),
        (
            ["model={name: custom, target: 'nets:factory', args: {num_outputs: 10}}"],
            "loop.input_shape",
            "required with model and no data",
        ),
    ],
)
def test_what_a_loop_would_not_use_exits_2_naming_it(
    loop_spec, deeprig_home, overrides, field, message
):
    result = validate(loop_spec, *overrides)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert f"{field}: " in flat and message in flat, result.output


def test_a_loops_custom_model_without_data_takes_its_args_as_written(loop_spec, deeprig_home):
    model = "model={name: custom, target: 'nets:Net', args: {num_outputs: 10, input_shape: [64]}}"
    assert validate(loop_spec, model).exit_code == 0
    # deeprig fills nothing without data: a parameter left out is the user's to give
    bare = "model={name: custom, target: 'nets:Net', args: {}}"
    result = validate(loop_spec, bare, "loop.input_shape=[64]")
    assert result.exit_code == 2
    assert "needs 'num_outputs'" in " ".join(result.output.split())


def test_a_loop_runs_params_hold_no_optim_and_no_data(loop_spec):
    from deeprig.spec.loader import load_spec
    from deeprig.tracking.lineage import flatten

    spec = load_spec(loop_spec)
    params = flatten("", spec.model_dump(mode="json"), {})
    assert not [k for k in params if k.split(".")[0] in {"optim", "data", "model"}]
    unused = {"checkpoint.every_n_epochs", "scaling.mixed_precision", "early_stopping"}
    assert not unused & set(params) and params["checkpoint.metric"] == "loss"
    assert params["loop.config.epochs"] == "2"
    assert type(spec).model_validate(spec.model_dump(mode="json")) == spec  # round trip


def test_a_loops_closing_table_shows_its_checkpoint_metric_first(loop_spec):
    from deeprig.runners.train_metrics import CLOSING_METRICS, closing_metrics
    from deeprig.spec.loader import load_spec

    shown = closing_metrics(load_spec(loop_spec, ["loop.metrics=[epoch, loss, acc]"]))
    assert shown == ("epoch", "step", "loss", "acc")
    assert closing_metrics(load_spec(loop_spec.parent / "job.yaml")) == CLOSING_METRICS


def test_a_search_checks_the_user_code_at_each_extreme(user_code, deeprig_home):
    tune = user_code.parent / "tune.yaml"
    tune.write_text(
        "name: t\nkind: tune\nbase: job.yaml\n"
        "search_space: {model.args.width: {choice: [8, wide]}}\n"
        "search: {num_samples: 2, metric: val_loss}\n"
    )
    result = validate(tune)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "search_space.model.args.width: value 'wide': model.args.width: " in flat


def test_a_spec_without_model_or_loop_names_the_fix(user_code, deeprig_home):
    (user_code.parent / "noloop.yaml").write_text(
        "name: x\nkind: train\ndata: {source: 'builtin:digits'}\n"
    )
    result = validate(user_code.parent / "noloop.yaml")
    assert result.exit_code == 2
    assert "model: required" in result.output


def test_the_bundle_records_every_python_file_with_its_hash(user_code):
    bundle = CodeBundle.collect([str(user_code.parent / "mods")])
    assert sorted(bundle.artifact_files()) == ["data.py", "loops.py", "nets.py"]
    manifest = bundle.manifest().splitlines()
    assert len(manifest) == 3 and all(len(line.split("  ")[0]) == 64 for line in manifest)
    assert len(bundle.sha256) == 64
    assert bundle.py_modules() == sorted(str(user_code.parent / "mods" / n) for n in USER_MODULES)


def test_a_worker_without_the_code_paths_installs_the_shipped_files(user_code, monkeypatch):
    import sys

    bundle = CodeBundle.collect([str(user_code.parent / "mods")])
    moved = user_code.parent / "elsewhere"
    (user_code.parent / "mods").rename(moved)  # as on another node: the paths do not exist
    monkeypatch.setattr(sys, "path", list(sys.path))
    bundle.install()
    installed = [p for p in sys.path if "deeprig-code-" in p]
    assert (
        installed
        and (Path(installed[0]) / "nets.py").read_bytes() == (moved / "nets.py").read_bytes()
    )


def test_arguments_bind_against_the_signature():
    def build(num_outputs: int, width: int = 4, *, depth: int):
        return None

    kwargs, problems = bind_arguments(
        build, {"width": 8, "depth": 2}, "model.args", {"num_outputs": 10, "input_shape": (1,)}
    )
    assert problems == []
    assert kwargs == {"width": 8, "depth": 2, "num_outputs": 10}
    _, problems = bind_arguments(build, {}, "model.args", {"num_outputs": 10})
    assert [p.message for p in problems] == ["build needs 'depth'; add it to model.args"]


def test_a_module_from_outside_code_paths_is_named_before_a_cluster_job(user_code, tmp_path):
    import importlib
    import sys

    from deeprig.usercode.bundle import modules_outside

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stray_helper_mod.py").write_text("VALUE = 1\n")
    bundle = CodeBundle.collect([str(user_code.parent / "mods")])
    sys.path.insert(0, str(elsewhere))
    try:
        importlib.import_module("stray_helper_mod")
        outside = modules_outside(bundle)
    finally:
        sys.path.remove(str(elsewhere))
        sys.modules.pop("stray_helper_mod", None)
    assert str((elsewhere / "stray_helper_mod.py").resolve()) in outside


def test_a_loop_counting_epochs_from_0_shows_its_first_report_as_epoch_1():
    from deeprig.runners.train_metrics import LoopEpochsEnded

    rows = [{"epoch": 0.0, "loss": 1.0}, {"epoch": 1.0, "loss": 0.5}]
    shown = LoopEpochsEnded(lambda: rows[-1], lambda: rows)
    assert shown.poll()["epoch"] == 2
    assert [r["epoch"] for r in shown.history()] == [1, 2]
    assert rows[0]["epoch"] == 0  # the records themselves are left as given
    from_1 = [{"epoch": 1.0}]
    assert LoopEpochsEnded(lambda: from_1[-1], lambda: from_1).poll()["epoch"] == 1


def test_the_weights_are_found_where_rays_guide_saves_them(tmp_path):
    import torch
    from deeprig.runners.loop_model import state_dict_in
    from torch import nn

    net = nn.Linear(3, 2)
    (tmp_path / "under_key").mkdir()
    (tmp_path / "whole").mkdir()
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "under_key" / "checkpoint.pt")
    wrapped = {f"module.{k}": v for k, v in net.state_dict().items()}  # saved from DDP
    torch.save(wrapped, tmp_path / "whole" / "model.pt")

    weights, where = state_dict_in(tmp_path / "under_key", "model")
    assert where == "checkpoint.pt['model']"
    assert weights is not None and torch.equal(weights["weight"], net.weight)
    weights, where = state_dict_in(tmp_path / "whole", "model")
    assert where == "model.pt" and weights is not None and set(weights) == {"weight", "bias"}
    weights, looked = state_dict_in(tmp_path / "under_key", "net")
    assert weights is None and looked == "checkpoint.pt"
