"""Bad search specs: exit 2 naming the field, before Ray starts."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from deeprig.spec import SpecError, TuneSpec, load_spec_text
from typer.testing import CliRunner

from tests.conftest import JOBS

TUNE = f"""\
name: t
kind: tune
base: {JOBS / "digits_mlp.yaml"}
search_space:
  optim.lr: {{loguniform: [0.001, 0.1]}}
search: {{metric: val_accuracy, mode: max, num_samples: 4}}
scheduler: {{name: asha}}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, source="tune.yaml")
    return [p.render("tune.yaml") for p in info.value.problems]


def test_good_search_spec_loads_its_base_by_path():
    spec = load_spec_text(TUNE, source=str(JOBS / "x.yaml"))
    assert isinstance(spec, TuneSpec) and spec.base.name == "digits-mlp"


def test_search_path_missing_from_the_base_is_named():
    found = problems_of(TUNE.replace("optim.lr:", "optim.learning_rate:"))
    assert found == ["tune.yaml:5: search_space.optim.learning_rate: not a field of the base spec"]


def test_empty_choice_is_refused():
    found = problems_of(TUNE.replace("{loguniform: [0.001, 0.1]}", "{choice: []}"))
    assert found == ["tune.yaml:5: search_space.optim.lr: choice needs at least one value"]


def test_low_not_below_high_is_refused():
    found = problems_of(TUNE.replace("{loguniform: [0.001, 0.1]}", "{uniform: [0.5, 0.1]}"))
    assert "search_space.optim.lr: uniform: low must be < high" in found[0]


def test_loguniform_bounds_must_be_positive():
    found = problems_of(TUNE.replace("[0.001, 0.1]", "[0, 0.1]"))
    assert "search_space.optim.lr: loguniform: bounds must be > 0" in found[0]


def test_values_the_base_spec_refuses_are_named():
    text = TUNE.replace(
        "  optim.lr: {loguniform: [0.001, 0.1]}\n",
        "  optim.lr: {loguniform: [0.001, 0.1]}\n  scaling.num_workers: {choice: [1, 0]}\n",
    )
    found = problems_of(text)
    assert any("search_space.scaling.num_workers: value 0 is invalid" in p for p in found)


def test_a_metric_the_base_never_reports_is_refused(tmp_path, deeprig_home):
    job = tmp_path / "tune.yaml"
    job.write_text(TUNE.replace("metric: val_accuracy", "metric: val_rmse"))
    result = CliRunner().invoke(app, ["validate", str(job)])
    assert result.exit_code == 2
    assert "search.metric: 'val_rmse' is never reported by the base (classification)" in (
        result.output
    )


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [
        (
            "base.checkpoint.every_n_steps=10",
            "base.checkpoint.every_n_steps: a search's trials checkpoint once an epoch",
        ),
        (
            "base.tracking.log_every_n_steps=5",
            "base.tracking.log_every_n_steps: a search records its trials from Tune's results",
        ),
    ],
)
def test_step_level_settings_in_a_searchs_base_are_refused(
    tmp_path, deeprig_home, setting, refusal
):
    job = tmp_path / "tune.yaml"
    job.write_text(TUNE)
    result = CliRunner().invoke(app, ["validate", str(job), "--set", setting])
    assert result.exit_code == 2, result.output
    assert refusal in " ".join(result.output.split())


def test_pbt_without_checkpoints_at_each_perturbation_is_refused():
    text = TUNE.replace("{name: asha}", "{name: pbt, perturbation_interval: 2}")
    text = text.replace(
        f"base: {JOBS / 'digits_mlp.yaml'}",
        "base:\n"
        + "\n".join(
            "  " + line
            for line in (JOBS / "digits_mlp.yaml").read_text().splitlines()
            if line and not line.startswith("#")
        )
        + "\n  checkpoint: {every_n_epochs: 3}",
    )
    text = text.replace("  checkpoint: {num_to_keep: 2, metric: val_accuracy, mode: max}\n", "")
    found = problems_of(text)
    assert any("scheduler.perturbation_interval: pbt needs a checkpoint" in p for p in found)


def test_optuna_cannot_search_a_grid():
    text = TUNE.replace("{loguniform: [0.001, 0.1]}", "{grid: [0.001, 0.01]}").replace(
        "search: {", "search: {algorithm: optuna, "
    )
    assert "optuna cannot search a grid" in problems_of(text)[0]


RL_TUNE = f"""\
name: t
kind: tune
base: {JOBS / "rl_ppo_cartpole.yaml"}
search_space:
  training.lr: {{loguniform: [0.0001, 0.003]}}
  training.entropy_coeff: {{choice: [0.0, 0.01]}}
search: {{metric: episode_return_mean, mode: max, num_samples: 4}}
scheduler: {{name: asha}}
"""


def test_a_search_over_an_rl_base_may_set_training_keys_the_base_leaves_out():
    spec = load_spec_text(RL_TUNE, source="tune.yaml")
    assert isinstance(spec, TuneSpec) and spec.base.kind == "rl"
    assert "entropy_coeff" not in spec.base.training


def test_pbt_over_an_rl_base_is_refused():
    found = problems_of(RL_TUNE.replace("name: asha", "name: pbt"))
    assert any("scheduler.name: pbt over an rl base is not supported" in p for p in found)


def validate_rl_tune(tmp_path, change: tuple[str, str]):
    """`deeprig validate` of RL_TUNE with `change` made."""
    job = tmp_path / "tune.yaml"
    job.write_text(RL_TUNE.replace(*change))
    return CliRunner().invoke(app, ["validate", str(job)])


def test_rl_search_over_a_setting_the_algorithm_never_takes_is_refused(tmp_path, deeprig_home):
    result = validate_rl_tune(tmp_path, ("training.entropy_coeff", "training.entropy_coef"))
    assert result.exit_code == 2, result.output
    assert "search_space.training.entropy_coef: PPO does not take 'entropy_coef'" in result.output


def test_rl_search_on_a_metric_the_algorithm_never_reports_is_refused(tmp_path, deeprig_home):
    result = validate_rl_tune(tmp_path, ("metric: episode_return_mean", "metric: val_accuracy"))
    assert result.exit_code == 2, result.output
    assert "search.metric: 'val_accuracy' is never reported by an rl job" in result.output
