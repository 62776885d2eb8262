"""``--option METHOD.NAME=VALUE`` grouped by method and checked against the registry: shared by ``explain`` and
the ``--data`` runs (a module of its own, so neither command imports the other)."""
from __future__ import annotations

from typing import Any, Sequence

from interpretorch.cli.common import UserError


def method_options(pairs: Sequence[tuple[str, str, Any]], methods: Sequence[str]) -> dict[str, dict]:
    """Group ``--option`` values by method, checking each method runs and takes the option."""
    from interpretorch.attribution.registry import canonical, get_method

    options: dict[str, dict] = {}
    for method, name, value in pairs:
        m = canonical(method)
        if m not in methods:
            raise UserError(f"--option {method}.{name}: {m} is not among the methods run ({', '.join(methods)})")
        try:
            get_method(m).check_options({name: value})
        except TypeError as e:
            raise UserError(f"--option {method}.{name}: {e}") from None
        options.setdefault(m, {})[name] = value
    return options
