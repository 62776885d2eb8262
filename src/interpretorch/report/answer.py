"""The top of every page: its headline answer and its red flags, one HTML block and one CSS rule set that every
family's page includes, plus the colour bar drawn beside each map.

Pages call :func:`answer_html` with the ``headline`` and ``flags`` they also store in their JSON, so a script
reading the JSON and a person reading the page see the same conclusions.
"""
from __future__ import annotations

from html import escape
from typing import Any, Iterable, Mapping

from interpretorch.core.flags import flag_texts
from interpretorch.report.scales import Scale, css_gradient, fmt_value

ANSWER_CSS = """
.answer { border-left: 4px solid #246; background: #f3f6fa; padding: 0.5em 0.9em; margin: 0.6em 0 1em; max-width: 75em; }
.answer .headline { font-size: 1.08em; margin: 0.2em 0; }
.answer ul.flags { margin: 0.4em 0 0.2em; padding-left: 1.2em; }
.answer ul.flags li { color: #8a1c00; margin: 0.15em 0; }
.answer .noflags { color: #2a6a2a; font-size: 0.9em; margin: 0.2em 0; }
.cbar { margin-top: 3px; max-width: 320px; }
.cbar .bar { height: 8px; border: 1px solid #bbb; }
.cbar .ticks { display: flex; justify-content: space-between; font-size: 0.8em; color: #444;
               font-variant-numeric: tabular-nums; }
.cbar .what { font-size: 0.75em; color: #666; }
"""


def answer_html(headline: str | None, flags: Iterable[dict[str, Any] | str | None] = ()) -> str:
    """The headline answer and the red flags as one HTML block (``<section class="answer">``)."""
    texts = flag_texts(flags)
    parts = ['<section class="answer" id="answer">']
    if headline:
        parts.append(f'<p class="headline"><b>{escape(headline)}</b></p>')
    if texts:
        parts.append('<ul class="flags">' + "".join(f"<li>&#9873; {escape(t)}</li>" for t in texts) + "</ul>")
    else:
        parts.append('<p class="noflags">No red flags raised by the checks this page runs.</p>')
    parts.append("</section>")
    return "".join(parts)


def settings_text(settings: Mapping[str, Any] | None) -> str:
    """One sentence naming the settings profile a run used (the CPU's lighter one or the papers') and, for the
    CPU profile, each option it changed and how to get the papers' settings; "" when none is recorded."""
    if not settings:
        return ""
    profile = settings.get("profile")
    changed = settings.get("changed") or {}
    parts = [f"{m}: " + ", ".join(f"{k}={v}" for k, v in opts.items()) for m, opts in changed.items() if opts]
    if profile == "cpu":
        text = "Settings: the lighter CPU profile"
        if parts:
            text += " (" + "; ".join(parts) + ")"
        if settings.get("max_steps") is not None:
            text += f" (the top {settings['max_steps']} randomization steps)"
        return text + "; --paper-settings runs the papers' settings."
    note = settings.get("note")
    return "Settings: the papers' settings" + (f" ({note})" if note else "") + "."


def settings_html(settings: Mapping[str, Any] | None) -> str:
    """The settings sentence as a paragraph (``<p class="settings">``), or "" when none is recorded."""
    text = settings_text(settings)
    return f'<p class="meta settings">{escape(text)}</p>' if text else ""


def colorbar_html(lo: float | str, hi: float | str, cmap: str = "jet", what: str = "") -> str:
    """A colour bar: the colormap left to right with the values at its ends (numbers, or words such as
    "each map's 99th percentile"), 0 in the middle of a symmetric scale, and a short note of what they are."""
    mid = ""
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        if lo < 0 < hi and abs(lo + hi) <= 1e-9 * max(abs(lo), abs(hi)):
            mid = "<span>0</span>"
    lo_t = lo if isinstance(lo, str) else fmt_value(lo)
    hi_t = hi if isinstance(hi, str) else fmt_value(hi)
    note = f'<div class="what">{escape(what)}</div>' if what else ""
    return (f'<div class="cbar" title="colour scale: {escape(what or cmap)}"><div class="bar" style="background: '
            f'{css_gradient(cmap)};"></div><div class="ticks"><span>{escape(lo_t)}</span>{mid}'
            f'<span>{escape(hi_t)}</span></div>{note}</div>')


def scale_colorbar(scale: Scale, what: str = "") -> str:
    """:func:`colorbar_html` of a :class:`~interpretorch.report.scales.Scale`."""
    return colorbar_html(scale.lo, scale.hi, scale.cmap, what or scale.describe())


def map_range(values: Any, signed: bool | None = None) -> tuple[float, float]:
    """The colour range of a map: +-(99th percentile of |value|) when signed (by default: when any value is
    negative), else from 0 to the maximum."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    if signed is None:
        signed = bool(v.min() < 0)
    if signed:
        s = float(np.percentile(np.abs(v), 99.0)) or float(np.abs(v).max()) or 1.0
        return -s, s
    hi = float(v.max())
    return 0.0, hi if hi > 0 else 1.0
