"""Whether this process is the `mim-hub` command line, told from how the interpreter was started.

`import mim_hub` registers every model with transformers' Auto classes, which imports
transformers' modelling code (`import mim_hub` takes about 3x `import torch`). A user's
`import mim_hub` must do it (`AutoModel.from_pretrained(folder)` follows), but the command line
need not before it knows what to run: `mim-hub --help` and `mim-hub <command> --help` import
neither torch nor transformers. So `mim_hub/__init__.py` leaves the registration to the command
line when this process *is* the command line (`cli.main` does it before a command runs), and does
it on import everywhere else.

The interpreter's own command line (`sys.orig_argv`) says so without any guess from the imports
so far: the program is `python -m mim_hub` (or `-m mim_hub.cli`), or a script named `mim-hub`
(the console script; `mim-hub.exe` / `mim-hub-script.py` on Windows). A worker process started by
multiprocessing's spawn or forkserver runs `python -c ...`, so it registers on import as any
other process does.
"""

from __future__ import annotations

import os
import re
import sys

MODULES = ("mim_hub", "mim_hub.cli")  # `python -m` targets that are the command line
SCRIPT = "mim-hub"  # the console script of pyproject.toml's [project.scripts]
_SCRIPT_SUFFIX = re.compile(r"(-script\.pyw?|\.exe)$")  # as the console script's launcher strips them
_OPTIONS_WITH_VALUE = ("X", "W")  # interpreter options whose value may be the next argument
_LONG_OPTIONS_WITH_VALUE = ("--check-hash-based-pycs",)


def main_program(orig_argv: list[str]) -> tuple[str, str | None]:
    """What the interpreter command line `orig_argv` (`[python, options..., program, args...]`)
    runs: ("module", name) for `-m name`, ("script", path), ("command", None) for `-c`, or
    ("stdin", None) when nothing is named (the interactive prompt, `python -`)."""
    arguments = list(orig_argv[1:])
    while arguments:
        argument = arguments.pop(0)
        if argument == "--" or argument == "-" or not argument.startswith("-"):
            if argument == "--":
                argument = arguments.pop(0) if arguments else "-"
            return ("stdin", None) if argument == "-" else ("script", argument)
        if argument.startswith("--"):
            if argument in _LONG_OPTIONS_WITH_VALUE and arguments:
                arguments.pop(0)
            continue
        letters = argument[1:]  # a cluster of short options, e.g. -Bm, -X importtime, -Wignore
        for position, letter in enumerate(letters):
            rest = letters[position + 1:]
            if letter == "m":
                return "module", rest or (arguments.pop(0) if arguments else None)
            if letter == "c":
                return "command", None
            if letter in _OPTIONS_WITH_VALUE:
                if not rest and arguments:
                    arguments.pop(0)
                break
    return "stdin", None


def started_as_command_line(orig_argv: list[str] | None = None) -> bool:
    """True when the process runs `mim-hub` itself (`orig_argv`: the interpreter's command line,
    `sys.orig_argv` by default)."""
    kind, name = main_program(sys.orig_argv if orig_argv is None else orig_argv)
    if kind == "module":
        return name in MODULES
    if kind == "script":
        return _SCRIPT_SUFFIX.sub("", os.path.basename(name)) == SCRIPT
    return False


__all__ = ["main_program", "started_as_command_line"]
