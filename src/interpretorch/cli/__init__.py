"""`interpretorch <command>`: one module per command in this package, discovered by name.

A command module defines ``NAME`` (the word typed after ``interpretorch``), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; adding a command is adding a file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType
from typing import NoReturn, Sequence

from interpretorch.cli.common import UserError, printable, user_error_message

_NOT_COMMANDS = {"common"}


def commands() -> dict[str, ModuleType]:
    """Return {command name: module} for every command module of this package, sorted by name."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_COMMANDS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found[module.NAME] = module
    return dict(sorted(found.items()))


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage block is left to --help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``interpretorch`` argument parser with one sub-parser per command module."""
    p = OneLineParser(prog="interpretorch", description="Explain what a deep network sees.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module, _parser=cmd)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interpretorch`` command; user errors print one line and return 2."""
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:  # said by the command's own parser, so the message names the command
            args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return int(args._module.run(args))
    except (UserError, ValueError, KeyError, OSError, TypeError, ImportError, AttributeError,
            FloatingPointError) as e:
        print(f"\ninterpretorch: error: {user_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterpretorch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
