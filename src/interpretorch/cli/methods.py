"""``interpretorch methods``: every registered method with its kind and options.

The full listing is cached under the user's cache folder, keyed by a fingerprint of the package's source files
and of the installed plugins, so a second ``interpretorch methods`` prints it without importing torch; any change
to a source file or a plugin makes a new key (the listing is recomputed from the registry).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Sequence

NAME = "methods"
HELP = "list the explanation methods: name, map kind, layer, options, defaults and the target kinds each explains"
PLUGIN_GROUP = "interpretorch.plugins"  # the entry-point group of interpretorch.core.plugins


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No arguments beyond an optional name filter."""
    p.add_argument("names", nargs="*", help="only these methods (default: all)")


def listing(specs: Sequence[Any]) -> str:
    """The text printed for these method descriptions: one block per method."""
    from interpretorch.core.targets import TARGET_KINDS as every

    lines = []
    for s in specs:
        flags = [s.kind] + (["needs a layer"] if s.needs_layer else []) + ([f"shared pass: {s.group}"]
                                                                          if s.group else [])
        lines.append(f"{s.name:22s} {', '.join(flags)}" + (f"   (also: {', '.join(s.aliases)})" if s.aliases else ""))
        if s.doc:
            lines.append(textwrap.fill(s.doc, 110, initial_indent="    ", subsequent_indent="    "))
        opts = ", ".join(n if v is inspect.Parameter.empty else f"{n}={v!r}" for n, v in s.options.items())
        lines.append(f"    options: {opts or 'none'}")
        kinds = tuple(getattr(s, "targets", ()))
        if kinds:
            lines.append("    targets: " + ("every kind" if set(every) <= set(kinds) else
                                          f"{', '.join(kinds)}; not {', '.join(k for k in every if k not in kinds)}"
                                          + (f" ({s.targets_note})" if getattr(s, "targets_note", "") else "")))
    return "\n".join(lines) + "\n"


def source_fingerprint(root: Path | None = None) -> str:
    """SHA-256 of the package's source files (path, size, modification time), the installed plugins and Python."""
    root = root or Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"{sys.version}|{root}".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{os.path.relpath(os.path.join(dirpath, f), root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        h.update(f"{ep.name}={ep.value}@{getattr(dist, 'version', '')}".encode())
    return h.hexdigest()[:32]


def cache_file() -> Path:
    """Where the listing for this source fingerprint is kept ($INTERPRETORCH_CACHE_DIR, else the XDG cache)."""
    base = os.environ.get("INTERPRETORCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "interpretorch")
    return Path(base) / f"methods-{source_fingerprint()}.txt"


def run(args: argparse.Namespace) -> int:
    """Print one block per method."""
    cached = None
    if not args.names:
        try:
            cached = cache_file()
            sys.stdout.write(cached.read_text(encoding="utf-8"))
            return 0
        except OSError:
            pass
    from interpretorch.attribution.registry import get_method, method_specs

    text = listing([get_method(n) for n in args.names] if args.names else method_specs())
    if not args.names:
        from interpretorch.transformers.generation import DEFAULT_METHODS, METHOD_DOCS

        text += f"\nexplain-generation --methods (default: {','.join(DEFAULT_METHODS)}):\n" + "".join(
            f"{name:22s} {doc}\n" for name, doc in METHOD_DOCS.items())
    sys.stdout.write(text)
    if cached is not None:
        try:  # a cache that cannot be written only costs the next run its speed
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, cached)
        except OSError:
            pass
    return 0
