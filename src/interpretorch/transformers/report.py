"""The explain-text and explain-generation pages: their headlines and red flags, and ``index.html`` /
``results.json`` (on the report floor, as every family's report module)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from interpretorch.core import flags as red
from interpretorch.report.answer import ANSWER_CSS, answer_html, colorbar_html
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


def generation_answer(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The generation page's headline (per method, the input token carrying the largest share of the answer's
    |attribution|) and its red flags (methods naming different top input tokens for many answer tokens;
    rollout, which ignores the target)."""
    n_in = len(results["input_tokens"])
    columns = results["input_tokens"] + results["output_tokens"]
    answer = " ".join(results["output_tokens"])
    parts, row_tops, flags = [], {}, []
    for m, d in results["methods"].items():
        mat = [[abs(float(v)) for v in row] for row in d["matrix"]]
        total = sum(sum(row) for row in mat)
        if n_in == 0 or not mat:
            continue
        per_col = [sum(row[j] for row in mat) for j in range(n_in)]
        j = max(range(n_in), key=lambda c: per_col[c])
        share = per_col[j] / total if total else 0.0
        parts.append(f"{m} {columns[j]!r} ({100 * share:.0f}% of its |attribution|)")
        row_tops[m] = [f"{max(range(n_in), key=lambda c: row[c])}" for row in mat]
        if m == "rollout":
            flags.append(red.ignores_target("rollout", "weighs tokens by attention flow alone, the same whatever "
                                                       f"score ({results.get('target')}) is explained"))
    found = "; ".join(parts) if parts else "none (no input tokens)" if n_in == 0 else "none (no method was run)"
    head = (f"Input token with the most attribution for the answer {answer!r} ({len(results['row_tokens'])} "
            f"explained row(s)), per method: {found}.")
    named = {m: [columns[int(j)] + f"@{j}" for j in tops] for m, tops in row_tops.items()}
    flags.insert(0, red.methods_disagree("input token", named))
    return head, [f for f in flags if f]


def generation_settings_text(results: dict[str, Any]) -> str:
    """One sentence naming the baseline of Integrated Gradients and ablation (which token, which columns kept
    their own token and so read exactly 0), IG's steps and the ablation mode; "" when neither method ran."""
    st = results.get("settings") or {}
    ran = [m for m in ("integrated_gradients", "ablation") if m in results.get("methods", {})]
    if not st or not ran:
        return ""
    token = st.get("baseline_token") or f"token id {st.get('baseline_id')}"
    parts = []
    if "integrated_gradients" in ran:
        parts.append(f"Integrated Gradients: {st.get('ig_steps')} {st.get('ig_method')} steps on the straight path "
                     f"from the baseline")
    if "ablation" in ran:
        parts.append("ablation: each column " + ("removed" if st.get("ablation") == "remove" else
                                                 "replaced by its baseline token"))
    text = "Settings: " + "; ".join(parts) + f". Baseline: {token!r} at every attributed column"
    kept = st.get("kept_tokens") or []
    if st.get("special_tokens") == "keep":
        if kept:
            text += (", except the special tokens " + ", ".join(repr(t) for t in kept) + ", which keep their own "
                     "token: their columns are exactly 0 under " + " and ".join(ran) + " (not a finding: they "
                     "are not perturbed; --special-tokens replace perturbs them too)")
        else:
            text += " (no special token among the columns)"
    else:
        text += ", special tokens included (--special-tokens replace)"
    return text + "."


def _cell_colour(v: float, span: float) -> str:
    a = 0.0 if span <= 0 or v != v else min(1.0, abs(v) / span)  # over white: matplotlib's bwr at 0.5 +- a / 2
    return f"rgba(255, 0, 0, {a:.3f})" if v >= 0 else f"rgba(0, 0, 255, {a:.3f})"


def write_generation_report(results: dict, out_dir: str | Path) -> Path:
    """Write ``results.json`` (with its ``headline`` and ``flags``) and ``index.html`` (the headline and flags,
    generated text, one heat map per method with a colour bar, printed values and hover) into ``out_dir``;
    returns the page's path."""
    import json

    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {**results}
    results["headline"], results["flags"] = generation_answer(results)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    columns = results["input_tokens"] + results["output_tokens"]
    maps = []
    for m, d in results["methods"].items():
        span = max((abs(v) for row in d["matrix"] for v in row), default=0.0)
        scores = d.get("target_logit", results["scores"])  # AttnLRP explains the logit
        share = d.get("softmax_share")
        kept = set((results.get("settings") or {}).get("kept_columns") or []) \
            if m in ("integrated_gradients", "ablation") else set()
        rows = [{"token": tok, "score": scores[i] if i < len(scores) else float("nan"),
                 "share": None if share is None else share[i],
                 "cells": [{"value": v, "colour": _cell_colour(v, span), "dark": span > 0 and abs(v) > 0.6 * span,
                            "title": f"{tok} <- {columns[j]}: {v:.4g}" + (" (special token kept in the baseline: "
                                                                           "not perturbed)" if j in kept else "")}
                           for j, v in enumerate(row)]}
                for i, (tok, row) in enumerate(zip(results["row_tokens"], d["matrix"]))]
        maps.append({"method": m, "span": span, "rows": rows, "share": share is not None,
                     "cbar": colorbar_html(-span, span, "bwr", "signed, the largest |value| of this method's "
                                                              "matrix at either end") if span > 0 else
                     colorbar_html(-1.0, 1.0, "bwr", "every value is 0"),
                     "target": "logit" if "target_logit" in d else "target",
                     "note": {"rollout": "Rollout ignores the target: each row is a distribution over the columns.",
                              "attnlrp": "AttnLRP explains the logit; 'softmax' is the part of it the softmax "
                                         "rule keeps (biases and position embeddings keep the rest that the row "
                                         "does not sum to)."}.get(m, "")})
    env = Environment(loader=PackageLoader("interpretorch.transformers", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("generation.html").render(r=results, columns=columns, maps=maps,
                                                      n_in=len(results["input_tokens"]),
                                                      settings=generation_settings_text(results),
                                                      answer=answer_html(results["headline"], results["flags"]),
                                                      answer_css=ANSWER_CSS)
    (out / "index.html").write_text(html, encoding="utf-8")
    return out / "index.html"
