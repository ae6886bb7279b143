"""A pytest plugin for the GPU session's test step: every test's outcome is appended to the JSON
lines file named by MIM_HUB_TEST_RECORD as soon as the test ends, so a step stopped at its budget
still reports the tests it finished (`-p pytest_record`, with this folder on the path)."""

from __future__ import annotations

import json
import os


def pytest_runtest_logreport(report) -> None:
    path = os.environ.get("MIM_HUB_TEST_RECORD")
    if not path or (report.when != "call" and report.passed) or (report.when == "teardown" and not report.failed):
        return
    outcome = "error" if report.when != "call" and report.failed else report.outcome
    message = ""
    if report.failed:
        message = str(report.longrepr)[-600:]
    elif report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    with open(path, "a") as handle:
        handle.write(json.dumps({"test": report.nodeid.split("::", 1)[-1], "outcome": outcome, "seconds": round(report.duration, 2),
                                 "message": message}) + "\n")
