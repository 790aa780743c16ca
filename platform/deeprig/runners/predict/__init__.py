"""`kind: predict` (and `deeprig predict`): a trained model scores new rows on Ray Data.

Before Ray starts, the model is found (model.py: a logged or registered model, or a train
checkpoint folder) and routed by the data it trained on to its input reader (readers.py:
a table, text, an image or audio folder, a series), which checks the input against it;
the output must be new (or `overwrite`) in a writable folder (writer.py). Then the rows
stream (job.py): the reader's rows -> `map_batches` over a pool of `workers` actors, each
loading the model once (scorer.py) -> the driver appends each batch to a temporary file
beside the output, renamed to it at the end, while the progress bar (progress.py) and a
labelled input's scores (scores.py) follow."""

from deeprig.runners.predict.command import command_job, predict_spec
from deeprig.runners.predict.job import RESUMES, PredictOutcome, check, run

__all__ = ["RESUMES", "PredictOutcome", "check", "command_job", "predict_spec", "run"]
