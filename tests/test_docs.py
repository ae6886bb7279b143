"""Documentation: every relative link in our Markdown points at a file that exists, every CLI
subcommand documents its options, every public class has a docstring."""

import contextlib
import inspect
import io
import os
import re
import subprocess
import sys

import pytest

import mim_hub

ROOT = os.path.join(os.path.dirname(__file__), "..")
SKIP_DIRS = {".venv", ".venv-ci", ".git", "node_modules", "outputs", "fixtures", ".pytest_cache"}


def markdown_files():
    for folder, dirs, files in os.walk(ROOT, followlinks=False):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".tmp")]
        for name in files:
            if name.endswith(".md"):
                yield os.path.join(folder, name)


def test_relative_links_resolve():
    broken = []
    for path in markdown_files():
        text = open(path, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#") or "{{" in target:
                continue
            file_part = target.split("#")[0]
            if file_part and not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), file_part))):
                broken.append(f"{os.path.relpath(path, ROOT)} -> {target}")
    assert not broken, broken


def test_every_cli_command_has_help():
    from mim_hub.cli import build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"mim-hub {name}: option {action.option_strings or action.dest} has no help"
    # the console script itself, once per command (in-process: each process would pay `import mim_hub`)
    for name in sub.choices:
        with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(io.StringIO()) as out:
            main([name, "--help"])
        assert exit_info.value.code == 0 and "usage:" in out.getvalue(), name
    # and one process end to end
    out = subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage:" in out.stdout


@pytest.mark.parametrize("name", sorted(n for n in mim_hub.__all__ if n[0].isupper()))
def test_public_classes_have_docstrings(name):
    cls = getattr(mim_hub, name)
    assert inspect.getdoc(cls) and len(inspect.getdoc(cls)) > 20, name
