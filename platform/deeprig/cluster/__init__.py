"""Ray connection (the one place that calls `ray.init`), cluster resources and the
resource budget that keeps Ray Data schedulable next to training workers."""
