"""Opening model files from strangers: a ``torch.export`` archive is checked before torch reads it.

``torch.export.load`` unpickles some entries with ``weights_only=False`` (pickled weights and constants, custom and
opaque objects, legacy weight files, sample inputs that fail the safe loader), evaluates every symbolic-shape string
with ``sympy.sympify`` (an ``eval``), resolves each graph node's target by name under ``torch``, ``operator`` and
``math`` (``torch.ops.load_library`` is one such name), runs the archive's guard code and loads compiled AOTInductor
libraries. :func:`check_export_archive` refuses an archive that uses any of these, before torch opens it; an
archive written by ``torch.export.save`` for an ordinary model passes.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import logging
import math
import operator
import re
from pathlib import Path
from typing import Any, Iterator

import torch

TRUST_FLAG = "--trust-model-file"


class UnsafeModelFile(ValueError):
    """A model file that could run code when opened or run, refused unless the user says they trust it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{str(path)!r} {reason}, which could run code from the file; open it only if you trust "
                         f"where it came from: pass {TRUST_FLAG} (library: trust_code=True)")
        self.reason = reason


# sympy names a symbolic-shape string may call (what torch.export writes with sympy.srepr), besides torch's own
# functions (torch.utils._sympy.functions) and names sympy does not know (which become plain symbols).
_SYMPY_NAMES = frozenset("""
Symbol Dummy Integer Rational Float Add Mul Pow Mod floor ceiling Max Min Abs Eq Ne Lt Le Gt Ge StrictLessThan
StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not Xor true false BooleanTrue BooleanFalse oo zoo
nan Half One Zero NegativeOne Infinity NegativeInfinity ComplexInfinity NaN Piecewise ExprCondPair ITE Tuple sqrt
IntInfinity NegativeIntInfinity int_oo
""".split())
_STRING_ARG_CALLS = frozenset({"Symbol", "Dummy", "Float"})  # the only calls whose string arguments sympy won't eval


def _torch_sympy_names() -> frozenset[str]:
    try:
        from torch.utils._sympy import functions
    except ImportError:  # pragma: no cover - torch without its sympy helpers
        return frozenset()
    return frozenset(n for n, v in vars(functions).items()
                     if not n.startswith("_") and getattr(v, "__module__", None) == functions.__name__)


def _sympy_namespace() -> frozenset[str]:
    names = set(dir(builtins))
    try:
        import sympy

        names |= set(dir(sympy))
    except ImportError:  # pragma: no cover - torch always brings sympy
        pass
    return frozenset(names)


def safe_sympy_expression(text: str) -> bool:
    """Whether ``text`` is a plain symbolic-shape expression that ``sympy.sympify`` can read without running code."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    allowed = _SYMPY_NAMES | _torch_sympy_names()
    known = _sympy_namespace()

    def name_ok(name: str) -> bool:
        # an allowed sympy class, or a name sympy's eval does not know (it becomes a Symbol)
        return name in allowed or (not name.startswith("_") and name not in known)

    def ok(node: ast.AST, string_allowed: bool = False) -> bool:
        if isinstance(node, ast.Expression):
            return ok(node.body)
        if isinstance(node, ast.Constant):
            return isinstance(node.value, (int, float, bool)) or node.value is None or (
                isinstance(node.value, str) and string_allowed)
        if isinstance(node, ast.Name):
            return name_ok(node.id)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or not name_ok(node.func.id):
                return False
            strings = node.func.id in _STRING_ARG_CALLS
            return (all(ok(a, strings) for a in node.args)
                    and all(k.arg is not None and ok(k.value) for k in node.keywords))
        if isinstance(node, ast.BinOp):
            return ok(node.left) and ok(node.right)
        if isinstance(node, ast.UnaryOp):
            return ok(node.operand)
        if isinstance(node, ast.BoolOp):
            return all(ok(v) for v in node.values)
        if isinstance(node, ast.Compare):
            return ok(node.left) and all(ok(c) for c in node.comparators)
        if isinstance(node, (ast.Tuple, ast.List)):
            return all(ok(e) for e in node.elts)
        return False  # attributes, subscripts, lambdas, comprehensions, f-strings, ...

    return ok(tree)


_OPERATOR_NAMES = frozenset("""
getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ xor not_ invert lshift rshift
matmul index truth is_ is_not
""".split())


def safe_graph_target(target: str) -> bool:
    """Whether a graph node's target names a torch operator (or a pure ``operator`` / ``math`` / ``torch.sym_*``
    function): nothing that loads libraries, touches files or runs Python by name."""
    parts = target.split(".")
    if parts[0] == "_operator":
        return len(parts) == 2 and parts[1] in _OPERATOR_NAMES and hasattr(operator, parts[1])
    if parts[0] == "math":
        return len(parts) == 2 and not parts[1].startswith("_") and callable(getattr(math, parts[1], None))
    if parts[0] != "torch":
        return False
    if len(parts) == 2 and re.fullmatch(r"_?sym_[a-z_]+", parts[1]):
        return callable(getattr(torch, parts[1], None))
    if len(parts) < 4 or parts[1] != "ops" or any(not p.isidentifier() or p.startswith("__") for p in parts[2:]):
        return False
    if parts[2] not in ("aten", "prims", "higher_order", "quantized_decomposed"):
        return False
    try:
        obj: Any = torch.ops
        for p in parts[2:]:
            obj = getattr(obj, p)
    except (AttributeError, RuntimeError):
        return False
    return isinstance(obj, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))


def _walk(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of the nested dicts and lists of a JSON document, and every dict as ("", dict)."""
    if isinstance(obj, dict):
        yield "", obj
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _check_program_json(path: str | Path, name: str, doc: Any) -> None:
    if not isinstance(doc, dict):
        raise ValueError(f"{str(path)!r}: {name} is not a torch.export program")
    if doc.get("guards_code"):
        raise UnsafeModelFile(path, "holds guard code (Python source torch runs)")
    for key, value in _walk(doc):
        if key == "expr_str" and isinstance(value, str) and not safe_sympy_expression(value):
            raise UnsafeModelFile(path, f"has a symbolic shape {value[:60]!r} that is not a plain expression "
                                        "(torch evaluates it with sympy)")
        if key == "as_operator" and isinstance(value, str) and not safe_graph_target(value):
            raise UnsafeModelFile(path, f"calls {value[:80]!r}, which is not a torch operator")
        if key == "" and "target" in value and "inputs" in value and "outputs" in value:
            target = value["target"]
            if not isinstance(target, str) or not safe_graph_target(target):
                raise UnsafeModelFile(path, f"calls {str(target)[:80]!r}, which is not a torch operator")


def check_export_archive(path: str | Path) -> None:
    """Refuse (UnsafeModelFile) a ``torch.export`` archive that would unpickle, eval or load code when opened or run;
    a ValueError when it is not such an archive at all."""
    from torch.export.pt2_archive import constants as C

    try:
        reader = torch._C.PyTorchFileReader(str(path))
        fmt = reader.get_record(C.ARCHIVE_FORMAT_PATH).decode() if reader.has_record(C.ARCHIVE_FORMAT_PATH) else ""
        names = list(reader.get_all_records())
    except (RuntimeError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{str(path)!r} is not a torch.export program (save one with torch.export.save): "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    if fmt != C.ARCHIVE_FORMAT_VALUE:
        if "version" in names and "serialized_exported_program.json" in names:
            raise UnsafeModelFile(path, "is an old-format torch.export archive (its weights are pickles)")
        raise ValueError(f"{str(path)!r} is not a torch.export program (save one with torch.export.save)")
    if any(n.startswith(C.AOTINDUCTOR_DIR) for n in names):
        raise UnsafeModelFile(path, "holds a compiled AOTInductor library")
    models = [n for n in names if n.startswith(C.MODELS_DIR) and n.endswith(".json")]
    if not models:
        raise ValueError(f"{str(path)!r} holds no exported program (save one with torch.export.save)")
    prefix, suffix = C.MODELS_FILENAME_FORMAT.split("{}")

    def read_json(record: str) -> Any:
        try:
            return json.loads(reader.get_record(record).decode())
        except (RuntimeError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{str(path)!r}: {record} is not readable JSON: {e}") from None

    for record in models:
        model = record[len(prefix):-len(suffix)]
        for legacy in (f"{C.WEIGHTS_DIR}{model}.pt", f"{C.CONSTANTS_DIR}{model}.pt"):
            if legacy in names:
                raise UnsafeModelFile(path, f"stores {legacy} as a pickle (legacy format)")
        for fmt_, kind in ((C.WEIGHTS_CONFIG_FILENAME_FORMAT, "weight"),
                           (C.CONSTANTS_CONFIG_FILENAME_FORMAT, "constant")):
            config_file = fmt_.format(model)
            if config_file not in names:
                continue
            config = read_json(config_file).get("config", {})
            for fqn, meta in (config.items() if isinstance(config, dict) else []):
                if not isinstance(meta, dict):
                    raise ValueError(f"{str(path)!r}: {config_file} is not a torch.export payload config")
                if meta.get("use_pickle"):
                    raise UnsafeModelFile(path, f"stores its {kind} {fqn!r} as a pickle")
                path_name = str(meta.get("path_name", ""))
                if kind == "constant" and not path_name.startswith(C.TENSOR_CONSTANT_FILENAME_PREFIX):
                    raise UnsafeModelFile(path, f"stores its constant {fqn!r} as a pickled object")
        sample = C.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if sample in names:
            data = reader.get_record(sample)
            if data:
                try:
                    torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
                except Exception:  # noqa: BLE001 - whatever the safe loader refuses, torch would unpickle
                    raise UnsafeModelFile(path, "has sample inputs that are not plain tensors (torch would "
                                                "unpickle them)") from None
        _check_program_json(path, record, read_json(record))


@contextlib.contextmanager
def quiet_torch_export_logs() -> Iterator[None]:
    """Silence torch.export's multi-line warnings (with tracebacks) while a program is read."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export")]
    old = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def load_export_program(path: str | Path, trust_code: bool = False) -> Any:
    """``torch.export.load`` of ``path`` after :func:`check_export_archive` (skipped when ``trust_code``)."""
    if not trust_code:
        check_export_archive(path)
    with quiet_torch_export_logs():
        return torch.export.load(str(path))
