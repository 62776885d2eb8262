"""The explain and evaluate reports of tiny_cnn opened in headless Chromium (Debian's, driven by Playwright) at
1400 and 800 px: every image loads, no console error, no horizontal overflow, a colour bar under each map, and a
click enlarges a map."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.data.samples import sample_images


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The default explain report and an evaluate report of tiny_cnn on two of the sample photos."""
    root = tmp_path_factory.mktemp("browser")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared CI machine
    imgs = []
    for name, arr in sample_images()[:2]:
        Image.fromarray(arr).save(root / f"{name}.png")
        imgs.append(str(root / f"{name}.png"))
    assert main(["explain", *imgs, "--model", "tiny_cnn", "--out", str(root / "explain")]) == 0
    assert main(["evaluate", *imgs, "--model", "tiny_cnn", "--methods", "gradcam,eigencam,gradient,occlusion",
                 "--option", "occlusion.window=16", "--out", str(root / "evaluate")]) == 0
    torch.set_num_threads(threads)
    return {"explain": root / "explain" / "index.html", "evaluate": root / "evaluate" / "index.html"}


@pytest.mark.parametrize("width", [1400, 800])
@pytest.mark.parametrize("which", ["explain", "evaluate"])
def test_report_in_a_real_browser(browser, reports, which, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(reports[which]).resolve().as_uri())
    page.wait_for_load_state("load")
    # lazy images load as they scroll in: load them all, then check each one decoded
    page.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20000)
    broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert broken == [], f"images that did not load: {broken}"
    n_images = page.evaluate("document.images.length")
    assert n_images > 10
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px at {width} px"
    bars = page.evaluate("""Array.from(document.querySelectorAll('figure.tile .cbar .bar')).map(b => {
        const r = b.getBoundingClientRect();
        return {w: r.width, h: r.height, bg: getComputedStyle(b).backgroundImage}; })""")
    tiles = page.evaluate("document.querySelectorAll('figure.tile').length")
    assert tiles > 0 and len(bars) == tiles, "every map has a colour bar"
    assert all(b["w"] > 50 and b["h"] > 3 and "linear-gradient" in b["bg"] for b in bars)
    widths = page.evaluate("Array.from(document.querySelectorAll('figure.tile img')).map(i => i.getBoundingClientRect().width)")
    assert min(widths) >= 120, f"maps shrank to {min(widths)} px"
    # the grid keeps its columns: all maps of a row have one width, whatever their captions
    assert max(widths) - min(widths) < 2
    if which == "evaluate":
        assert page.evaluate("document.querySelectorAll('table.metrics').length") == 2
    page.click("figure.tile a.zoom")
    assert page.evaluate("document.getElementById('zoom').open")
    assert page.evaluate("document.querySelector('#zoom img').naturalWidth") > 0
    assert errors == [], f"console errors: {errors}"
    page.close()
