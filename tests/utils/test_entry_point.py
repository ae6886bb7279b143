"""`utils/entry_point.py`: the `mim-hub` command line told from the interpreter's command line."""

import pytest

from mim_hub.utils.entry_point import main_program, started_as_command_line

PYTHON = "/venv/bin/python"


@pytest.mark.parametrize("argv", [
    [PYTHON, "-m", "mim_hub", "--help"],
    [PYTHON, "-m", "mim_hub"],
    [PYTHON, "-mmim_hub", "pretrain"],
    [PYTHON, "-Bm", "mim_hub", "zoo"],
    [PYTHON, "-X", "importtime", "-m", "mim_hub", "--help"],
    [PYTHON, "-Ximporttime", "-W", "ignore", "-I", "-m", "mim_hub.cli", "eval"],
    [PYTHON, "--check-hash-based-pycs", "never", "-m", "mim_hub"],
    [PYTHON, "/venv/bin/mim-hub", "--help"],  # the console script (its shebang runs the interpreter on it)
    [PYTHON, "-E", "/venv/bin/mim-hub", "-m", "x"],
    ["py.exe", "C:/venv/Scripts/mim-hub.exe", "zoo"],
    ["py.exe", "C:/venv/Scripts/mim-hub-script.py", "zoo"],
])
def test_the_command_line_is_recognised(argv):
    assert started_as_command_line(argv)


@pytest.mark.parametrize("argv", [
    [PYTHON, "-c", "import mim_hub"],
    [PYTHON, "-Bc", "import mim_hub", "-m", "mim_hub"],
    [PYTHON, "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)", "--multiprocessing-fork"],
    [PYTHON, "-m", "pytest", "-m", "mim_hub"],
    [PYTHON, "-m", "mim_hub_extras"],
    [PYTHON, "-m", "mim_hub.training.pretrain"],
    [PYTHON, "train.py", "-m", "mim_hub"],
    [PYTHON, "-X", "importtime", "mim-hub.py"],
    [PYTHON, "/venv/bin/mim-hub-extra"],
    [PYTHON, "-W", "ignore"],
    [PYTHON],
    [PYTHON, "-"],
])
def test_other_programs_are_not_the_command_line(argv):
    assert not started_as_command_line(argv)


def test_main_program_reads_the_interpreter_options():
    assert main_program([PYTHON, "-X", "dev", "-W", "error", "-m", "mim_hub", "x"]) == ("module", "mim_hub")
    assert main_program([PYTHON, "-Wd", "-Xfrozen_modules=off", "script.py", "-m", "y"]) == ("script", "script.py")
    assert main_program([PYTHON, "--", "script.py"]) == ("script", "script.py")
    assert main_program([PYTHON, "-c", "pass"]) == ("command", None)
    assert main_program([PYTHON, "-i"]) == ("stdin", None)
