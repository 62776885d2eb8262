"""`interpretorch <command>`: one module per command in this package, discovered by name.

A command module defines ``NAME`` (the word typed after ``interpretorch``), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; adding a command is adding a file.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn, Sequence

_NOT_COMMANDS = {"common"}


def command_help() -> dict[str, tuple[str, str]]:
    """Return {command name: (module name, one-line help)}, read from the command modules' source without
    importing them (so ``interpretorch --help`` does not import torch)."""
    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_COMMANDS:
            continue
        tree = ast.parse((Path(__path__[0]) / f"{info.name}.py").read_text(encoding="utf-8"))
        consts = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                  and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                  for t in node.targets if isinstance(t, ast.Name)}
        if "NAME" in consts:
            found[consts["NAME"]] = (info.name, consts.get("HELP", ""))
    return dict(sorted(found.items()))


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
        from interpretorch.cli.common import printable

        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def _state_defaults(parser: argparse.ArgumentParser) -> None:
    """Add "(default: ...)" to the help of every option whose default is a value and whose help does not say it."""
    for action in parser._actions:
        if (action.option_strings and action.help and action.help is not argparse.SUPPRESS
                and action.default not in (None, False, argparse.SUPPRESS) and "default" not in action.help):
            action.help += " (default: %(default)s)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``interpretorch`` argument parser with one sub-parser per command module; with ``only`` (a command
    name, or "" for none) only that command's module is imported and given its arguments."""
    p = OneLineParser(prog="interpretorch", description="Explain what a deep network sees.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_) in command_help().items():
        cmd = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            module = importlib.import_module(f"{__name__}.{module_name}")
            module.add_arguments(cmd)
            _state_defaults(cmd)
            cmd.set_defaults(_module=module, _parser=cmd)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interpretorch`` command; user errors print one line and return 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = build_parser(argv[0] if argv else "").parse_known_args(argv)
        if extra:  # said by the command's own parser, so the message names the command
            args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return int(args._module.run(args))
    except KeyboardInterrupt:
        print("\ninterpretorch: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from interpretorch.cli.common import UserError, user_error_message

        if not isinstance(e, (UserError, ValueError, KeyError, OSError, TypeError, ImportError, AttributeError,
                              FloatingPointError)):
            raise
        print(f"\ninterpretorch: error: {user_error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
