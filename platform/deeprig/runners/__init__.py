"""One module per kind of work: spec in, Ray library call out, MLflow run recorded."""
