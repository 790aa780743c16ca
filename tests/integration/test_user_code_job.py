"""User code on a real local Ray with a real MLflow store: the user's model and data
function on 2 workers, a plain Ray Train loop (a file that imports nothing from deeprig)
surviving a worker failure, and a search over the user's model's arguments."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import JOBS, only_run, runs_in
from tests.integration.conftest import run_in_fresh_home

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory, ray_2_cpus):
    """custom_model.yaml (mynets:SmallResNet on mydata:load, 2 workers) for 4 epochs:
    (the CLI's result, a client on its store, its one run)."""
    result, client = run_in_fresh_home(
        tmp_path_factory, "custom", str(JOBS / "custom_model.yaml"), "--set", "optim.num_epochs=4"
    )
    assert result.exit_code == 0, result.output
    return result, client, only_run(client, "custom")


def test_a_custom_model_on_custom_data_trains_on_two_workers(custom_model):
    _, client, run = custom_model
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    assert max(m.value for m in history) > 0.85
    assert run.data.params["model.target"] == "mynets:SmallResNet"
    assert run.data.params["scaling.num_workers"] == "2"
    assert run.info.status == "FINISHED"


def test_the_shipped_code_is_recorded_with_its_hashes(custom_model, tmp_path):
    _, client, run = custom_model
    folder = client.download_artifacts(run.info.run_id, "code", str(tmp_path))
    manifest = (tmp_path / "code" / "MANIFEST.sha256").read_text()
    lines = dict(reversed(line.split("  ")) for line in manifest.splitlines())
    assert {"mynets.py", "mydata.py", "myloop.py"} <= set(lines)
    shipped = (tmp_path / "code" / "mynets.py").read_bytes()
    assert shipped == (JOBS / "examples" / "mynets.py").read_bytes()
    assert lines["mynets.py"] == hashlib.sha256(shipped).hexdigest()
    expected = hashlib.sha256(manifest.encode()).hexdigest()
    assert run.data.tags["deeprig.code_sha256"] == expected
    assert folder.endswith("code")


def test_the_custom_model_loads_without_its_code_and_predicts(custom_model, tmp_path):
    _, client, run = custom_model
    assert run.data.tags["deeprig.model_format"] == "pt2"
    tracking_uri = client.tracking_uri
    # A fresh interpreter, away from jobs/examples: the model needs neither it nor deeprig.
    script = textwrap.dedent(
        f"""
        import mlflow, mlflow.pytorch, numpy as np, sys
        from sklearn.datasets import load_digits
        assert not any("examples" in p for p in sys.path)
        mlflow.set_tracking_uri({tracking_uri!r})
        model = mlflow.pytorch.load_model("runs:/{run.info.run_id}/model")
        digits = load_digits()
        x = (digits.images[:300] / 16.0).astype("float32")[:, None]
        import torch
        hits = (model(torch.as_tensor(x)).argmax(1).numpy() == digits.target[:300]).mean()
        print(hits)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) > 0.85


@pytest.fixture(scope="module")
def custom_loop(tmp_path_factory, ray_2_cpus):
    """custom_loop.yaml (myloop: plain Ray Train) for 4 epochs, its worker failing once at
    epoch 2 (`max_failures: 1`; its code raises, so `retry_on` adds user_code to what a
    restart is spent on): (the CLI's result, a client on its store, its runs)."""
    result, client = run_in_fresh_home(
        tmp_path_factory,
        "loop",
        str(JOBS / "custom_loop.yaml"),
        "--set",
        "loop.config.epochs=4",
        "--set",
        "loop.config.fail_at_epoch=2",
        "--set",
        "failure.retry_on=[user_code, worker_lost]",
    )
    assert result.exit_code == 0, result.output
    return result, client, runs_in(client, "custom")


def test_the_loop_imports_nothing_from_deeprig():
    import ast

    tree = ast.parse((JOBS / "examples" / "myloop.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and not any(name.split(".")[0] == "deeprig" for name in imported)


def test_a_plain_ray_train_loops_reports_are_mlflow_metrics_by_step(custom_loop):
    _, client, runs = custom_loop
    (run,) = runs  # one run, the restart included
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    # Epochs 0 and 1, then the failure at epoch 2, then 2 and 3 from the checkpoint: every
    # epoch once, none twice, at the epoch the loop reports (from 0: the first is kept).
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    assert "deeprig.unplaced_reports" not in run.data.tags
    assert max(m.value for m in history) > 0.8
    assert run.info.status == "FINISHED"


def test_a_failed_loop_worker_resumes_from_its_own_checkpoint(custom_loop, tmp_path):
    result, client, runs = custom_loop
    (run,) = runs
    folder = client.download_artifacts(run.info.run_id, "checkpoints/best", str(tmp_path))
    import torch

    saved = torch.load(f"{folder}/state.pt", weights_only=False)  # the loop's own format
    assert saved["epoch"] >= 2  # a checkpoint written after the restart
    assert run.data.tags["deeprig.best_epoch"] in {"2", "3"}  # as the loop counts


# A user's loop whose own code raises ValueError at epoch 2; each worker start is a line
# in the file `starts` names.
RAISING_LOOP = """
import ray.train


def train(config):
    with open(config["starts"], "a") as starts:
        starts.write("started\\n")
    for epoch in range(4):
        if epoch == 2:
            check_labels(epoch)
        ray.train.report({"epoch": epoch, "val_accuracy": 0.5})


def check_labels(epoch):
    raise ValueError(f"labels out of range at epoch {epoch}")
"""


@pytest.fixture(scope="module")
def raising_loop(tmp_path_factory, ray_2_cpus):
    """A loop raising at epoch 2 on 2 workers with `max_failures: 2`: (the CLI's result, a
    client on its store, its runs, how many workers started)."""
    code = tmp_path_factory.mktemp("raising") / "code"
    code.mkdir()
    (code / "badloop.py").write_text(RAISING_LOOP)
    starts = code.parent / "starts.txt"
    result, client = run_in_fresh_home(
        tmp_path_factory,
        "raising",
        str(JOBS / "custom_loop.yaml"),
        "--set",
        f"code.paths=[{code}]",
        "--set",
        "loop.function=badloop:train",
        "--set",
        f"loop.config={{starts: '{starts}'}}",
        "--set",
        "failure.max_failures=2",
    )
    return result, client, runs_in(client, "custom"), len(starts.read_text().splitlines())


def test_a_loop_whose_code_raises_is_not_restarted(raising_loop):
    result, _, runs, started = raising_loop
    assert result.exit_code == 1, result.output
    assert started == 2  # each of the 2 workers once: max_failures spent on nothing
    (run,) = runs
    assert run.info.status == "FAILED"
    assert run.data.tags["deeprig.failure"] == "user_code"


def test_a_loop_whose_code_raises_prints_one_block_with_the_users_frames(raising_loop):
    result, *_ = raising_loop
    block = result.output[result.output.index("job failed (user_code)") :].splitlines()
    assert len(block) <= 12, result.output
    text = "\n".join(block)
    assert "ValueError: labels out of range at epoch 2" in text
    assert "badloop.py:15, in check_labels" in text
    frames = [line for line in block if line.strip().startswith("File ")]
    assert len(frames) == 2 and all("badloop.py" in line for line in frames)
    assert "full log: " in block[-1]


@pytest.fixture(scope="module")
def raydocs_loop(tmp_path_factory, ray_2_cpus):
    """raydocs_loop.yaml (a loop as Ray's PyTorch guide writes it: its own DataLoader,
    epochs from 0, no `data:`, `model:` naming its network) for 3 epochs: (the CLI's
    result, a client on its store, its one run)."""
    result, client = run_in_fresh_home(
        tmp_path_factory,
        "raydocs",
        str(JOBS / "raydocs_loop.yaml"),
        "--set",
        "loop.config.epochs=3",
    )
    assert result.exit_code == 0, result.output
    return result, client, only_run(client, "custom")


def test_a_guide_loop_keeps_its_first_epoch_and_claims_no_data(raydocs_loop):
    result, client, run = raydocs_loop
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]  # epoch 0 included, as reported
    params = run.data.params
    assert not [k for k in params if k.split(".")[0] in {"optim", "data"}], params
    assert params["loop.config.lr"] == "0.01" and "effective_batch_size" not in params
    assert not run.inputs.dataset_inputs  # no data set it did not read
    flat = " ".join(result.output.split())
    assert "on its own data, 2 worker(s)" in flat and " train / " not in flat
    assert "deeprig.unplaced_reports" not in run.data.tags


def test_a_loops_key_metric_and_closing_table_are_its_best_checkpoints(raydocs_loop):
    result, client, run = raydocs_loop
    best = max(m.value for m in client.get_metric_history(run.info.run_id, "accuracy"))
    assert run.data.tags["deeprig.key_metric"] == "best_accuracy"
    assert run.data.metrics["best_accuracy"] == pytest.approx(best)
    table = result.output.split("best checkpoint")[1]
    assert "accuracy" in table and "loss" in table
    assert f"{best:.4g}" in table


def test_a_loops_model_is_logged_with_its_best_checkpoints_weights(raydocs_loop, tmp_path):
    import mlflow.pytorch
    import torch

    _, client, run = raydocs_loop
    folder = client.download_artifacts(run.info.run_id, "checkpoints/best", str(tmp_path))
    saved = torch.load(f"{folder}/checkpoint.pt", weights_only=False)  # the loop's own
    assert run.data.tags["deeprig.best_epoch"] == str(saved["epoch"])
    (model,) = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    logged = mlflow.pytorch.load_model(model.artifact_location)
    x = torch.rand(4, 1, 8, 8)
    sys.path.insert(0, str(JOBS / "examples"))
    try:
        from mynets import SmallResNet
    finally:
        sys.path.remove(str(JOBS / "examples"))
    net = SmallResNet(num_outputs=10, input_shape=(1, 8, 8), width=8)
    net.load_state_dict(saved["model"])
    with torch.no_grad():
        assert torch.allclose(logged(x), net.eval()(x), atol=1e-5)


@pytest.fixture(scope="module")
def search_over_model_args(tmp_path_factory, ray_2_cpus):
    """One trial of 2 epochs over the custom model's arguments, on a 2-worker base: the
    user's code reaches a trial's TorchTrainer workers (that trials differ and the best is
    chosen is test_tune_job's): (a client on its store, its runs)."""
    result, client = run_in_fresh_home(
        tmp_path_factory,
        "tune-custom",
        str(JOBS / "tune_custom_model.yaml"),
        "--set",
        "search.num_samples=1",
        "--set",
        "base.optim.num_epochs=2",
        "--set",
        "base.scaling.num_workers=2",
        "--set",
        "scheduler.name=fifo",
    )
    assert result.exit_code == 0, result.output
    return client, runs_in(client, "custom")


def test_a_search_over_the_models_args_records_a_child_run_per_trial(search_over_model_args):
    client, runs = search_over_model_args
    parents = [r for r in runs if r.data.tags.get("deeprig.kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 1
    # Each trial's own values of the searched arguments are its params.
    assert all(r.data.params["model.args.width"] in {"8", "16", "24"} for r in children)
    assert all(c.info.status == "FINISHED" for c in children)
    assert parents[0].data.metrics["best_val_accuracy"] > 0.5


def test_a_multi_worker_base_runs_each_trial_as_a_torch_trainer(search_over_model_args):
    """A 2-worker base: each trial is a 2-worker TorchTrainer reporting to Tune."""
    client, runs = search_over_model_args
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    for child in children:
        assert child.data.params["scaling.num_workers"] == "2"
        assert len(client.get_metric_history(child.info.run_id, "val_accuracy")) == 2
