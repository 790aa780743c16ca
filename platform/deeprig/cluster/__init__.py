"""Everything about where a job runs: the Ray connection (session.py, the one place that
calls `ray.init`), cluster resources and the worker budget that keeps Ray Data schedulable
(resources.py), checks that only a multi-node cluster needs (preflight.py), jobs on the Ray
Jobs API (jobs.py), and the one-box cluster of `deeprig cluster up` (local.py)."""
