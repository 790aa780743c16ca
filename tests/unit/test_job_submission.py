"""What `deeprig submit` sends to the Ray Jobs API: the job's metadata names where it
records (for its history) and never a credential."""

from __future__ import annotations

from deeprig.cluster.jobs import JobMetadata, WorkingDir, build_submission, without_credentials
from deeprig.spec import load_spec

from tests.conftest import JOBS, REPO


def test_credentials_are_cut_out_of_a_tracking_uri():
    assert (
        without_credentials("http://alice:s3cret@mlflow.team:5000/x") == "http://mlflow.team:5000/x"
    )
    assert without_credentials("https://mlflow.team") == "https://mlflow.team"


def test_the_metadata_names_the_tracking_server_without_its_password():
    spec = load_spec(JOBS / "digits_cnn.yaml")
    upload = WorkingDir(REPO, [], 1, 1, [])
    env = {"MLFLOW_TRACKING_URI": "http://jobs:pa55word@127.0.0.1:5000"}
    submission = build_submission(spec, JOBS / "digits_cnn.yaml", [], upload, env)
    assert submission.metadata[JobMetadata.TRACKING] == "http://127.0.0.1:5000"
    assert submission.metadata[JobMetadata.EXPERIMENT] == spec.experiment_name
    assert "pa55word" not in str(submission.metadata)
