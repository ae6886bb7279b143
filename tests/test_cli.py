"""`cli.py`: the command line's help is cheap (it imports no model, recipe, training code,
datasets or accelerate), and a command still runs with every model registered, as after
`import mim_hub` anywhere else. What is checked is which modules a fresh process imported (`-X
importtime` lists each), never how long it took: the time is benchmarks/cli_startup.py's."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from mim_hub.commands import COMMANDS

SRC = os.path.join(os.path.dirname(__file__), "..", "src")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath(SRC), os.environ.get("PYTHONPATH", "")])}
# what `--help` must not import: the heavy libraries, transformers' modelling code (what registering
# with the Auto classes costs), any method's model or recipe, the training code
FORBIDDEN = re.compile(r"^(datasets|accelerate|transformers\.modeling_utils|mim_hub\.models\.\w+\.modeling_\w+|mim_hub\.training)(\.|$)")
# the console script pip writes for [project.scripts] mim-hub = "mim_hub.cli:main"
CONSOLE_SCRIPT = textwrap.dedent("""\
    import re
    import sys
    from mim_hub.cli import main
    if __name__ == '__main__':
        sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
        sys.exit(main())
    """)


def imported_modules(program: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `python -X importtime PROGRAM...` and return the process and the modules it imported."""
    process = subprocess.run([sys.executable, "-X", "importtime", *program], capture_output=True, text=True, env=ENV)
    modules = [line.split("|")[-1].strip() for line in process.stderr.splitlines() if line.startswith("import time:")]
    assert modules[1:], process.stderr[-2000:]  # (the header line, then one line per module)
    return process, modules[1:]


@pytest.mark.parametrize("command", [[], ["convert"], ["zoo"], *[[name] for name in COMMANDS]], ids=lambda c: " ".join(c) or "mim-hub")
def test_help_imports_no_model_recipe_training_code_datasets_or_accelerate(command):
    process, modules = imported_modules(["-m", "mim_hub", *command, "--help"])
    assert process.returncode == 0 and "usage: mim-hub" in process.stdout, process.stderr[-2000:]
    assert [m for m in modules if FORBIDDEN.match(m)] == []
    assert "mim_hub.cli" in modules  # (the check reads what it should)


def test_the_console_script_help_is_as_cheap(tmp_path):
    script = tmp_path / "mim-hub"
    script.write_text(CONSOLE_SCRIPT)
    process, modules = imported_modules([str(script), "pretrain", "--help"])
    assert process.returncode == 0 and "--noise-color" in process.stdout and "--teacher" in process.stdout, process.stderr[-2000:]
    assert [m for m in modules if FORBIDDEN.match(m)] == [] and "torch" not in modules


def test_a_refused_argument_exits_2_without_importing_the_library():
    process, modules = imported_modules(["-m", "mim_hub", "pretrain", "--output-dir", "x", "--noise-color", "grey"])
    assert process.returncode == 2 and "invalid choice: 'grey'" in process.stderr
    assert [m for m in modules if FORBIDDEN.match(m)] == []


CHECK_REGISTERED = textwrap.dedent("""\
    import sys
    from transformers import AutoConfig, AutoImageProcessor, AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY
    config = AutoConfig.for_model("mae", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                  decoder_intermediate_size=64, image_size=32, patch_size=8)
    print(type(AutoModel.from_config(config)).__name__, "masked-image-reconstruction" in PIPELINE_REGISTRY.get_supported_tasks())
    """)


def test_a_command_runs_with_every_model_registered(tmp_path):
    """In the command line's process `import mim_hub` leaves the registration to `cli.main`; it
    is done before the command runs (here `zoo`, which itself needs none)."""
    script = tmp_path / "mim-hub"
    script.write_text(CONSOLE_SCRIPT.replace("sys.exit(main())", "check = sys.argv.pop()\n    code = main()\n    exec(open(check).read())\n    sys.exit(code)"))
    check = tmp_path / "check.py"
    check.write_text(CHECK_REGISTERED)  # (touches no name of mim_hub's, which would import everything itself)
    process = subprocess.run([sys.executable, str(script), "zoo", "--format", "json", str(check)], capture_output=True, text=True, env=ENV)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.rstrip().endswith("MAEModel True")


def test_import_mim_hub_registers_everything_in_any_other_process():
    process = subprocess.run([sys.executable, "-c", "import mim_hub\n" + CHECK_REGISTERED], capture_output=True, text=True, env=ENV)
    assert process.returncode == 0 and process.stdout.split() == ["MAEModel", "True"], process.stderr[-3000:]


def test_a_name_asked_for_in_the_command_line_process_imports_and_registers_everything():
    """PEP 562: in the command line's own process, `mim_hub.MAEModel` (or `from mim_hub import
    ...`) is there when asked for, with everything registered."""
    program = ("import sys\nsys.orig_argv = [sys.executable, '-m', 'mim_hub']\nimport mim_hub\n"
               "assert 'mim_hub.auto' not in sys.modules and 'transformers.modeling_utils' not in sys.modules\n"
               "from mim_hub import MAEConfig\nassert 'MaskedImageReconstructionPipeline' in mim_hub.__all__\n" + CHECK_REGISTERED)
    process = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=ENV)
    assert process.returncode == 0 and process.stdout.split() == ["MAEModel", "True"], process.stderr[-3000:]
