"""How `deeprig runs --close-stale` judges a RUNNING run's driver from its tags."""

from __future__ import annotations

import socket
import subprocess
import sys

from deeprig.tracking.drivers import driver_tags, judge_driver
from deeprig.tracking.tags import Tag

HOST = socket.gethostname()


def test_a_live_driver_is_left_running():
    assert judge_driver(driver_tags(), HOST)[0] == "alive"


def test_a_driver_that_exited_is_closed():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    tags = {**driver_tags(), Tag.DRIVER_PID: str(gone.pid)}
    verdict, why = judge_driver(tags, HOST)
    assert verdict == "closed" and f"pid {gone.pid} is gone" in why


def test_a_pid_now_used_by_another_process_is_not_the_driver():
    tags = {**driver_tags(), Tag.DRIVER_STARTED: "12.00"}  # this pid, started long ago
    pid = tags[Tag.DRIVER_PID]
    assert judge_driver(tags, HOST) == ("closed", f"pid {pid} is another process now")


def test_runs_of_another_host_or_without_a_driver_are_not_judged():
    assert judge_driver({**driver_tags(), Tag.DRIVER_HOST: "gpu-box-7"}, HOST)[0] == "other host"
    assert judge_driver({}, HOST)[0] == "unknown driver"
