"""The tracking UI in a real browser: `deeprig ui` over a store holding deeprig runs,
clicked through in headless chromium the way a user would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deeprig.tracking.datasets import DatasetRecord, log_datasets
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import embedded_target

from tests.e2e.conftest import assert_is_a_real_screenshot

# The React app renders after the page loads and fetches from the server; a cold server
# on 2 CPUs answers its first calls slowly.
UI_TIMEOUT_MS = 30_000
VAL_ACCURACY = {"digits-mlp": [0.81, 0.93, 0.97], "digits-cnn": [0.85, 0.95, 0.98]}


@pytest.fixture
def digits_store(deeprig_home: Path, mlflow_client, tmp_path: Path) -> dict[str, str]:
    """Experiment `digits` with two finished train runs recorded the way a train job records
    them (deeprig's RunRecorder: spec as params, `deeprig.*` tags), each with `val_accuracy`
    by epoch. Returns run name -> run id. No Ray: only the records are needed."""
    target = embedded_target(deeprig_home)
    run_ids = {}
    for name, accuracies in VAL_ACCURACY.items():
        spec = {
            "name": name,
            "kind": "train",
            "model": {"name": name.removeprefix("digits-")},
            "data": {"source": "builtin:digits"},
            "optim": {"lr": 0.003, "num_epochs": len(accuracies)},
            "tracking": {"experiment": "digits"},
        }
        spec_file = tmp_path / f"{name}.yaml"
        spec_file.write_text(f"# {name}: a test run\nname: {name}\n")
        recorder = RunRecorder.create(
            target, "digits", spec, spec_file.read_text(), tmp_path, spec_path=spec_file
        )
        log_datasets(
            recorder,
            [
                DatasetRecord(
                    f"{name}-train",
                    "training",
                    "sklearn.datasets:load_digits",
                    name,
                    (8, 8),
                    "int64",
                    1438,
                )
            ],
        )
        for epoch, accuracy in enumerate(accuracies):
            mlflow_client.log_metric(recorder.run_id, "val_accuracy", accuracy, step=epoch)
        recorder.finish("FINISHED")
        run_ids[name] = recorder.run_id
    return run_ids


@pytest.mark.timeout(180)
def test_tracking_ui_shows_the_experiment_its_runs_and_a_metric(
    chromium_page, digits_store, tracking_ui, test_artifacts
):  # chromium_page first: without chromium it skips before a server starts
    from playwright.sync_api import expect

    page = chromium_page
    screenshot = test_artifacts / "tracking_ui_run_metrics.png"
    failure = test_artifacts / "tracking_ui_failure.png"
    for older in (screenshot, failure):  # judge (and leave) this run's screenshots only
        older.unlink(missing_ok=True)
    try:
        page.goto(tracking_ui.url)
        # MLflow 3 opens on its GenAI view; deeprig's runs live in the "Model training" one.
        page.get_by_role("button", name="Model training").click(timeout=UI_TIMEOUT_MS)
        page.get_by_role("link", name="Experiments", exact=True).click()
        expect(page).to_have_url(re.compile(r"#/experiments/?(\?.*)?$"), timeout=UI_TIMEOUT_MS)
        experiment = page.get_by_role("link", name="digits", exact=True)
        expect(experiment).to_be_visible(timeout=UI_TIMEOUT_MS)

        experiment.click()
        for name in ("digits-mlp", "digits-cnn"):
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible(
                timeout=UI_TIMEOUT_MS
            )

        page.get_by_role("link", name="digits-cnn", exact=True).click()
        expect(page).to_have_url(
            re.compile(rf"/runs/{digits_store['digits-cnn']}"), timeout=UI_TIMEOUT_MS
        )
        # The run's overview lists each metric with its latest value (the last epoch's).
        metric_row = page.get_by_role("row").filter(
            has=page.get_by_role("cell", name="val_accuracy", exact=True)
        )
        expect(metric_row).to_contain_text("0.98", timeout=UI_TIMEOUT_MS)
        # MLflow's own fields that deeprig fills: the spec as the Source, the data as
        # Datasets (deeprig's tags alone left both empty).
        expect(page.get_by_text("digits-cnn.yaml").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text("digits-cnn-train").first).to_be_visible(timeout=UI_TIMEOUT_MS)

        # ... and its model metrics tab charts the metric by step.
        page.get_by_role("tab", name="Model metrics").click()
        expect(page.get_by_text("digits-cnn (val_accuracy)", exact=True)).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        # The chart has drawn its line (not its loading spinner) before the screenshot.
        expect(page.locator(".js-plotly-plot .scatterlayer path.js-line").first).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        page.screenshot(path=screenshot, full_page=True)
    except Exception:
        page.screenshot(path=failure, full_page=True)
        raise

    assert_is_a_real_screenshot(screenshot, width=1400)
    left = tracking_ui.stop()
    assert left == [], f"stopping `deeprig ui` left processes behind: {left}"
