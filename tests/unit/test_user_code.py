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


def test_a_loop_must_take_one_config_argument(user_code, deeprig_home):
    loop = "loop={function: 'loops:two_args', metrics: [val_loss]}"
    result = validate(user_code, loop)
    assert result.exit_code == 2
    assert "loop.function" in result.output and "must take one argument" in result.output


def test_a_loops_checkpoint_metric_must_be_one_it_reports(user_code, deeprig_home):
    result = validate(user_code, "loop={function: 'loops:good', metrics: [train_loss]}")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "checkpoint.metric: 'val_loss' is not reported by the loop" in flat


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
