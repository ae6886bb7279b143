"""The model/config/image half of the hostile suite (tests/hostile_inputs_models.py): every case
is refused clearly or handled correctly, none gives a wrong answer or a raw traceback."""

import pytest

from hostile_inputs_models import CORRECT, REFUSED, all_cases, run_cases, summary

CASES = all_cases()


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hostile_models"))


@pytest.mark.parametrize("case", CASES, ids=[f"{group}:{name}" for group, name, _ in CASES])
def test_hostile_model_input_is_refused_or_handled(case, shared_folder):
    [(group, name, verdict, why)] = run_cases(shared_folder, [case])
    assert verdict in (REFUSED, CORRECT), f"{group} / {name}: {why}"


def test_every_issue_class_is_covered_and_counted():
    groups = {group for group, _, _ in CASES}
    assert groups == {"float images", "config types", "broken features", "huge config", "broken config.json", "extreme images",
                      "empty inputs"}
    line = summary([("a", "x", REFUSED, ""), ("a", "y", CORRECT, ""), ("b", "z", "wrong", "")])
    assert line.endswith("tried / refused clearly / handled correctly / wrong: 3/1/1/1")
