"""Round three (issue 34): the data layer under hostile and careless input. Every case of
tests/hostile_data.py (the same catalogue benchmarks/robustness.py counts) must end OK: refused
with a clear message naming the fault, exit 2 and nothing half-written, or handled correctly."""

import pytest

from hostile_data import CLASSES

CASES = [(class_name, case_name, case) for class_name, cases in CLASSES for case_name, case in cases]


@pytest.mark.parametrize("class_name,case_name,case", CASES, ids=[f"{c}:{n}" for c, n, _ in CASES])
def test_hostile_data_case(class_name, case_name, case, tmp_path):
    ok, why = case(str(tmp_path))
    assert ok, f"{class_name} / {case_name}: {why}"
