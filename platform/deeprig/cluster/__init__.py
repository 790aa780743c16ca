"""Everything about where a job runs: the Ray connection (session.py, the one place that
calls `ray.init`), cluster resources and the worker budget that keeps Ray Data schedulable
(resources.py), checks that only a multi-node cluster needs (preflight.py), jobs on the Ray
Jobs API (jobs.py), the one-box cluster of `deeprig cluster up` (local.py), and the rule
every verb follows for where runs are read and written (tracking_target.py), which asks
whether that cluster runs."""
