"""Every command's page opened in headless Chromium at 1400 and 800 px: the headline answer is visible above the
fold, the red flags of its JSON are listed and visible, the page does not scroll sideways, every picture loads,
and every map image sits next to a colour bar. Pages come from small runs of the tiny and shipped models (the
dissect experiments --relevance, --rotate, --checkpoints and --compare on a ProbeCNN, explain-generation on the
shipped translation model)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.data.samples import sample_images
from interpretorch.dissect.train import ProbeCNN

GAN = Path(__file__).parents[1] / "gan"
TOY = ["--generator", "gan_toys:toy_generator", "--segmenter", "gan_toys:toy_segmenter", "--samples", "20",
       "--quantile", "0.5", "--intervention-samples", "6"]


def _noise(folder: Path, n: int, seed: int, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """{page name: (index.html, the JSON holding its headline and flags, how to read them)}."""
    root = tmp_path_factory.mktemp("pages")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    photos = []
    for name, arr in sample_images()[:2]:
        Image.fromarray(arr).save(root / f"{name}.png")
        photos.append(str(root / f"{name}.png"))
    tiny = ["--model", "tiny_cnn"]
    run = {
        "explain": ["explain", *photos, *tiny, "--methods", "gradcam,xgradcam,gradient"],
        "explain-topk": ["explain", *photos, *tiny, "--methods", "gradcam,gradient", "--topk", "2"],
        "evaluate": ["evaluate", *photos, *tiny, "--methods", "gradcam,gradient", "--metrics", "deletion,road"],
        "evaluate-data": ["evaluate", "--data", str(_noise(root / "data", 6, 0)), *tiny, "--size", "32",
                          "--methods", "gradcam,gradient", "--metrics", "deletion,insertion"],
        "sanity": ["sanity", photos[0], *tiny, "--methods", "gradient,gradcam", "--max-steps", "2"],
        "tcav": ["tcav", "--images", str(_noise(root / "cls", 6, 1)), "--target", "3", "--concepts",
                 str(_noise(root / "mine", 8, 2)), "stripes", "--random", str(_noise(root / "rnd", 24, 3)),
                 "--runs", "3", "--set-size", "8", "--layers", "features.6,features.10", *tiny, "--size", "32"],
        "discover": ["discover", "--images", str(root / "cls"), "--target", "2", "--layer", "features.10",
                     "--concepts", "3", "--runs", "3", *tiny, "--size", "32"],
        "explain-text": ["explain-text", "A cat sat on the mat.", "--methods", "rollout,integrated_gradients"],
        "explain-generation": ["explain-generation", "the big cat sees a dog", "--max-new-tokens", "4",
                               "--methods", "integrated_gradients,rollout,ablation"],
        "crp": ["crp", photos[0], *tiny, "--size", "32", "--layer", "features.10", "--top", "2",
                "--reference", str(root / "cls"), "--reference-top", "2"],
        "craft": ["discover", "--method", "craft", "--images", str(root / "cls"), "--target", "2", "--concepts", "3",
                  "--designs", "8", *tiny, "--size", "32"],
    }
    for name, args in run.items():
        assert main([*args, "--out", str(root / name)]) == 0, name
    assert main(["make-probe", str(root / "probe"), "--images", "8", "--size", "48", "--seed", "2"]) == 0
    probe = ["--data", str(root / "probe"), "--model", "interpretorch.dissect.train:ProbeCNN", "--quantile", "0.01"]
    assert main(["dissect", *probe, "--layers", "conv1.2,conv3.2", "--report-units", "4", "--relevance",
                 "--top-images", "3", "--out", str(root / "dissect")]) == 0
    assert main(["dissect", *probe, "--layers", "conv1.2", "--report-units", "2", "--rotate", "0,1",
                 "--out", str(root / "rotate")]) == 0
    snaps = root / "snaps"
    snaps.mkdir()
    for step in (0, 5):
        torch.save(ProbeCNN(seed=step).state_dict(), snaps / f"step{step}.pt")
    assert main(["dissect", *probe, "--layers", "conv1.2", "--checkpoints", str(snaps),
                 "--out", str(root / "checkpoints")]) == 0
    assert main(["dissect", "--compare", str(root / "dissect"), str(root / "rotate" / "alpha_1"),
                 "--out", str(root / "compare")]) == 0
    sys.path.insert(0, str(GAN))
    try:
        assert main(["gandissect", *TOY, "--layers", "feat", "--out", str(root / "gandissect")]) == 0
        assert main(["gan-intervene", *TOY, "--layer", "feat", "--concept", "A", "--units", "1",
                     "--out", str(root / "gan-intervene")]) == 0
    finally:
        sys.path.remove(str(GAN))
    torch.set_num_threads(threads)

    def interventions(path: Path) -> tuple[str | None, list]:
        items = json.loads(path.read_text())
        return None, [f for i in items for f in i["flags"]]

    def key(path: Path, *, headline: str = "headline", flags: str = "flags") -> tuple[str | None, list]:
        d = json.loads(path.read_text())
        return d.get(headline), d.get(flags, [])

    gallery = next((root / "evaluate-data" / "gallery").glob("*.html"))
    return {
        **{n: (root / n / "index.html", key, root / n / "results.json") for n in
           ("explain", "explain-topk", "evaluate", "explain-text")},
        "evaluate-data": (root / "evaluate-data" / "index.html", key, root / "evaluate-data" / "summary.json"),
        "gallery": (gallery, None, None),
        "sanity": (root / "sanity" / "index.html", key, root / "sanity" / "sanity.json"),
        "tcav": (root / "tcav" / "index.html", key, root / "tcav" / "tcav.json"),
        "discover": (root / "discover" / "index.html", key, root / "discover" / "concepts.json"),
        "dissect": (root / "dissect" / "index.html", key, root / "dissect" / "report.json"),
        "dissect-layer": (root / "dissect" / "conv1.2.html", key, root / "dissect" / "conv1.2_files" / "answer.json"),
        "dissect-relevance": (root / "dissect" / "conv1.2_relevance.html", key,
                              root / "dissect" / "conv1.2_relevance.json"),
        "dissect-rotate": (root / "rotate" / "rotation.html", key, root / "rotate" / "rotation.json"),
        "dissect-checkpoints": (root / "checkpoints" / "checkpoints.html", key,
                                root / "checkpoints" / "checkpoints.json"),
        "dissect-compare": (root / "compare" / "compare.html", key, root / "compare" / "compare_answer.json"),
        "explain-generation": (root / "explain-generation" / "index.html", key,
                               root / "explain-generation" / "results.json"),
        "crp": (root / "crp" / "index.html", key, root / "crp" / "crp.json"),
        "craft": (root / "craft" / "index.html", key, root / "craft" / "concepts.json"),
        "gandissect": (root / "gandissect" / "index.html", interventions, root / "gandissect" / "interventions.json"),
        "gan-intervene": (root / "gan-intervene" / "index.html", interventions,
                          root / "gan-intervene" / "interventions.json"),
    }


PAGES = ["explain", "explain-topk", "evaluate", "evaluate-data", "gallery", "sanity", "tcav", "discover", "dissect",
         "dissect-layer", "gandissect", "gan-intervene", "explain-text", "explain-generation", "crp", "craft",
         "dissect-relevance", "dissect-rotate", "dissect-checkpoints", "dissect-compare"]


@pytest.mark.parametrize("width", [1400, 800])
@pytest.mark.parametrize("which", PAGES)
def test_page_answers_first_and_fits(browser, pages, which, width):
    html, read, source = pages[which]
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(html).resolve().as_uri())
    page.wait_for_load_state("load")
    page.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20000)
    broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert broken == [], f"images that did not load: {broken}"
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{which} scrolls sideways by {overflow} px at {width} px"
    # every map image has a colour bar beside it (in the same figure / box)
    lonely = page.evaluate("""Array.from(document.querySelectorAll('img.map')).filter(i => {
        const box = i.closest('.withbar'); return !box || !box.querySelector('.cbar .bar'); }).map(i => i.alt)""")
    assert lonely == [], f"maps without a colour bar: {lonely}"
    assert errors == [], f"script errors: {errors}"
    if read is None:  # a gallery page answers nothing of its own: its summary page does
        page.close()
        return
    headline, flags = read(source)
    box = page.evaluate("""(() => { const a = document.querySelector('section.answer');
        if (!a) return null; const r = a.getBoundingClientRect();
        const h = a.querySelector('.headline'); const items = Array.from(a.querySelectorAll('ul.flags li'));
        return {top: r.top, headline: h ? h.innerText : null, headTop: h ? h.getBoundingClientRect().top : null,
                flags: items.map(li => li.innerText),
                visible: items.every(li => li.getBoundingClientRect().height > 0)}; })()""")
    assert box is not None, f"{which}: no answer section"
    assert box["headline"] and box["headTop"] < 900 * 0.6, f"{which}: the headline is not above the fold"
    if headline is not None:
        assert box["headline"].strip() == headline.strip()
    texts = [f if isinstance(f, str) else f["text"] for f in flags]
    assert len(box["flags"]) == len(texts) and box["visible"]
    for shown, text in zip(box["flags"], texts):
        assert text in shown
    page.close()
