"""The explain-text page: the headline and red flags of a text explanation, and ``index.html`` /
``results.json`` (on the report floor, as every family's report module)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from interpretorch.core import flags as red
from interpretorch.report.answer import ANSWER_CSS, answer_html
from interpretorch.transformers.text import highlight_rows, top_words


def text_answer(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The text page's headline (what was explained, and each sentence's top words by the first method) and
    its red flags (nearly flat scores)."""
    if "similarity" in result:
        what = f"The cosine similarity of the two sentences is {result['similarity']:.3f}"
    elif isinstance(result.get("target"), int):
        what = f"Class {result['target']} (logit {result.get('logit', float('nan')):.3g}) is explained"
    else:
        what = f"The sentence's {result.get('target', 'score')} is explained"
    parts, flags = [], []
    for i, sent in enumerate(result["sentences"]):
        methods = sent["methods"]
        if methods:
            m, d = next(iter(methods.items()))
            top = top_words(d["tokens"], d["scores"])
            parts.append(f"sentence {i + 1}: {', '.join(top) if top else 'no word stands out'} ({m})")
        for m, d in methods.items():
            flags.append(red.flat_scores(f"{m} on sentence {i + 1}", d["scores"]))
    head = what + ("; words that raise it most: " + "; ".join(parts) if parts else "") + "."
    return head, [f for f in flags if f]


def write_text_report(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``index.html`` (the headline and flags, highlighted words with their scores) and ``results.json``
    (the result with its ``headline`` and ``flags``) into ``out_dir``."""
    import json

    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {**result}
    result["headline"], result["flags"] = text_answer(result)
    (out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    env = Environment(loader=PackageLoader("interpretorch.transformers", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("text.html").render(r=result, rows=highlight_rows(result),
                                                answer=answer_html(result["headline"], result["flags"]),
                                                answer_css=ANSWER_CSS)
    (out / "index.html").write_text(html, encoding="utf-8")
    return out / "index.html"
