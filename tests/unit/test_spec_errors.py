"""Bad input: exit code 2, every problem named by field path with a fix, before Ray starts,
and no MLflow run created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from deeprig.cli import app
from deeprig.spec import SpecError, load_spec_text
from typer.testing import CliRunner

from tests.conftest import JOBS, deeprig_home_at

GOOD = """\
name: t
kind: train
model: {name: mlp}
data: {source: "builtin:digits"}
optim: {num_epochs: 2}
"""


def problems_of(text: str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, overrides, source="job.yaml")
    return [p.render("job.yaml") for p in info.value.problems]


def validate(tmp_path: Path, text: str, *extra: str):
    job = tmp_path / "job.yaml"
    job.write_text(text)
    return CliRunner().invoke(app, ["validate", str(job), *extra])


def test_good_spec_validates_with_exit_0(tmp_path, deeprig_home):
    result = validate(tmp_path, GOOD)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_yaml_syntax_error_names_the_line(tmp_path, deeprig_home):
    result = validate(tmp_path, GOOD + "scaling: {num_workers: 2\n")
    assert result.exit_code == 2
    assert "job.yaml:7: YAML syntax error" in result.output
    assert "started on line 6" in result.output


def test_empty_file_is_refused(tmp_path, deeprig_home):
    result = validate(tmp_path, "# nothing here\n")
    assert result.exit_code == 2
    assert "empty" in result.output


@pytest.mark.parametrize("verb", ["validate", "run"])
def test_a_binary_file_is_refused_with_exit_2_not_a_traceback(tmp_path, deeprig_home, verb):
    job = tmp_path / "model.pt"
    job.write_bytes(b"PK\x03\x04\x80\xff\x00binary" * 8)
    result = CliRunner().invoke(app, [verb, str(job)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "not UTF-8 text (byte 0x80 at offset 4)" in result.output
    assert "Traceback" not in result.output


def test_unknown_keys_get_a_did_you_mean():
    found = problems_of(GOOD.replace("optim: {num_epochs: 2}", "optim: {num_epoch: 2, lrr: 1}"))
    assert any("optim.num_epoch: unknown field; did you mean 'num_epochs'?" in p for p in found)
    assert any("optim.lrr: unknown field; did you mean 'lr'?" in p for p in found)


def test_unknown_top_level_key_names_its_line():
    found = problems_of(GOOD + "scalling: {num_workers: 2}\n")
    assert found == ["job.yaml:6: scalling: unknown field; did you mean 'scaling'?"]


def test_wrong_types_are_named():
    found = problems_of(GOOD.replace("num_epochs: 2", "num_epochs: two"))
    assert len(found) == 1 and "optim.num_epochs" in found[0] and "'two'" in found[0]


def test_out_of_range_values_name_the_bound():
    found = problems_of(GOOD + "scaling: {num_workers: 0}\n")
    assert found == [
        "job.yaml:6: scaling.num_workers: must be >= 1 (got 0), or {min: 1, max: 4} for an "
        "elastic job"
    ]


def test_every_problem_is_listed_at_once():
    text = GOOD.replace("{num_epochs: 2}", "{num_epochs: 0, lr: -1}") + "seed: -3\n"
    found = problems_of(text)
    paths = {p.split(": ")[1] for p in found}
    assert paths == {"optim.num_epochs", "optim.lr", "seed"}


def test_unknown_model_name_lists_the_registry():
    found = problems_of(GOOD.replace("name: mlp", "name: cnnn"))
    assert len(found) == 1
    assert "model.name: unknown model 'cnnn'; did you mean 'cnn'?" in found[0]
    assert "'lstm'" in found[0] and "'gru'" in found[0]


def test_unknown_kind_is_refused():
    assert "did you mean 'train'" in problems_of(GOOD.replace("kind: train", "kind: trian"))[0]


def test_set_overrides_are_validated_like_the_file():
    spec = load_spec_text(GOOD, ["optim.lr=0.01", "model.hidden=[32]"])
    assert spec.optim.lr == 0.01 and spec.model.hidden == [32]
    assert "optim.lr: must be > 0.0" in problems_of(GOOD, ["optim.lr=-2"])[0]


def test_missing_parquet_path_is_refused(tmp_path, deeprig_home):
    text = GOOD.replace(
        'data: {source: "builtin:digits"}',
        f"data: {{source: parquet, path: {tmp_path}/nope.parquet, features: [x], label: y}}",
    )
    result = validate(tmp_path, text)
    assert result.exit_code == 2
    assert "job.yaml:4: data.path: no Parquet data at" in result.output


def test_missing_parquet_column_is_refused(tmp_path, deeprig_home, digits_parquet):
    text = GOOD.replace(
        'data: {source: "builtin:digits"}',
        f"data: {{source: parquet, path: {digits_parquet}, features: [pixels], label: digt}}",
    )
    result = validate(tmp_path, text)
    assert result.exit_code == 2
    assert "data.label: column(s) ['digt'] not in the data; did you mean 'digit'?" in result.output


def test_a_cnn_on_flat_features_is_refused_with_the_fix(tmp_path, deeprig_home, digits_parquet):
    text = GOOD.replace("name: mlp", "name: cnn").replace(
        'data: {source: "builtin:digits"}',
        f"data: {{source: parquet, path: {digits_parquet}, features: [pixels], label: digit}}",
    )
    result = validate(tmp_path, text)
    assert result.exit_code == 2
    assert "data.feature_shape" in result.output


def test_gpu_request_on_a_machine_without_gpu_is_refused(tmp_path, deeprig_home):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the request can be satisfied")
    result = validate(tmp_path, GOOD + "scaling: {use_gpu: true}\n")
    assert result.exit_code == 2
    assert "scaling.use_gpu: 1 GPU worker(s) need 1 GPU(s)" in result.output


def test_more_workers_than_cpus_is_refused(tmp_path, deeprig_home):
    result = validate(tmp_path, GOOD + "scaling: {num_workers: 512}\n")
    assert result.exit_code == 2
    assert "scaling.num_workers: 512 workers need at least 512 CPUs" in result.output


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """`deeprig run` of a spec asking for 512 workers, in a fresh interpreter (the integration
    tests' Ray may be up in this one): (what it printed, its deeprig home)."""
    folder = tmp_path_factory.mktemp("bad-run")
    job = folder / "job.yaml"
    job.write_text(GOOD + "scaling: {num_workers: 512}\n")
    code = (
        "import sys, ray; from typer.testing import CliRunner; from deeprig.cli import app;"
        f"r = CliRunner().invoke(app, ['run', {str(job)!r}]);"
        "print(r.exit_code, ray.is_initialized())"
    )
    with deeprig_home_at(folder / "deeprig-home") as home:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out, home


def test_bad_run_exits_2_before_ray_starts(bad_run):
    out, _ = bad_run
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr


def test_bad_run_records_nothing(bad_run):
    _, home = bad_run
    assert not (home / "mlflow.db").exists()


def test_a_bad_value_from_set_points_at_the_set_not_the_file_line(deeprig_home):
    result = CliRunner().invoke(
        app, ["validate", str(JOBS / "quickstart.yaml"), "--set", "optim.lr=abc"]
    )
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "--set optim.lr=abc: optim.lr:" in flat
    assert "quickstart.yaml:12" not in flat


@pytest.mark.parametrize("verb", ["run", "validate", "runs", "submit", "list", "eval"])
def test_help_names_values_as_a_cli_does_not_as_python_types(verb):
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert not any(t in result.output for t in ("<bool>", "<str>", "<int>", "list[str]"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "../../outside"), ("name", "a/b"), ("tracking.experiment", "../../x")],
)
def test_no_name_in_a_spec_can_lead_outside_the_deeprig_home(tmp_path, deeprig_home, field, value):
    # Job names become folders (checkpoints/, rl/, tune/) under $DEEPRIG_HOME.
    result = validate(tmp_path, GOOD, "--set", f"{field}={value}")
    assert result.exit_code == 2, result.output
    assert f"--set {field}={value}: {field}" in " ".join(result.output.split())


def test_ui_refuses_to_serve_the_store_beyond_this_machine(deeprig_home):
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without authentication" in " ".join(result.output.split())
