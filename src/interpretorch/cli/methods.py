"""``interpretorch methods``: every registered method with its kind and options."""
from __future__ import annotations

import argparse
import inspect
import textwrap

NAME = "methods"
HELP = "list the explanation methods: name, map kind, layer, options and defaults"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No arguments beyond an optional name filter."""
    p.add_argument("names", nargs="*", help="only these methods (default: all)")


def run(args: argparse.Namespace) -> int:
    """Print one block per method."""
    from interpretorch.attribution.registry import get_method, method_specs

    specs = [get_method(n) for n in args.names] if args.names else method_specs()
    for s in specs:
        flags = [s.kind] + (["needs a layer"] if s.needs_layer else []) + ([f"shared pass: {s.group}"]
                                                                          if s.group else [])
        print(f"{s.name:22s} {', '.join(flags)}" + (f"   (also: {', '.join(s.aliases)})" if s.aliases else ""))
        if s.doc:
            print(textwrap.fill(s.doc, 110, initial_indent="    ", subsequent_indent="    "))
        opts = ", ".join(n if v is inspect.Parameter.empty else f"{n}={v!r}" for n, v in s.options.items())
        print(f"    options: {opts or 'none'}")
    return 0
