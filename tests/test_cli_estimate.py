"""The CLI says what a run will cost before starting, and picks settings a CPU finishes (issue 32)."""
from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.cli.estimate import CPU_SETTINGS, announce, cpu_settings
from interpretorch.models import TinyCNN


def _image(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    return img


def _run(tmp_path, capsys, *extra):
    out = tmp_path / "rep"
    code = main(["explain", str(_image(tmp_path)), "--model", "tiny_cnn", "--size", "32", "--methods",
                 "gradcam,integrated_gradients,rise", "--option", "rise.n_masks=8", "--out", str(out), *extra])
    assert code == 0
    return json.loads((out / "results.json").read_text()), capsys.readouterr().err


def test_cpu_run_uses_lighter_settings_records_them_and_announces_its_rows(tmp_path, capsys):
    results, err = _run(tmp_path, capsys)
    steps = CPU_SETTINGS["integrated_gradients"]["steps"]
    assert results["settings"]["profile"] == "cpu"
    assert results["settings"]["changed"] == {"integrated_gradients": {"steps": steps}}  # rise.n_masks was given
    item = results["images"][0]["methods"]
    assert item["integrated_gradients"]["options"]["steps"] == steps and item["rise"]["options"]["n_masks"] == 8
    rows = 1 + (steps + 2) + (8 + 1)  # gradcam, IG (its steps, clean and baseline passes), RISE (masks, clean)
    assert f"about {rows} model rows" in err


def test_the_page_states_the_settings_it_ran_with(tmp_path, capsys):
    _run(tmp_path, capsys)
    page = (tmp_path / "rep" / "index.html").read_text()
    steps = CPU_SETTINGS["integrated_gradients"]["steps"]
    assert f"the lighter CPU profile (integrated_gradients: steps={steps})" in page
    assert "--paper-settings runs the papers&#x27; settings" in page
    _run(tmp_path, capsys, "--paper-settings")
    assert "Settings: the papers&#x27; settings" in (tmp_path / "rep" / "index.html").read_text()


def test_paper_settings_keep_the_library_defaults(tmp_path, capsys):
    results, err = _run(tmp_path, capsys, "--paper-settings")
    assert results["settings"]["profile"] == "paper" and results["settings"]["changed"] == {}
    assert "steps" not in (results["images"][0]["methods"]["integrated_gradients"]["options"] or {})
    assert f"about {1 + 34 + 9} model rows" in err


def test_gpu_runs_the_papers_settings_and_user_options_win():
    opts, record = cpu_settings(["rise", "gradcam"], "cuda", False, {})
    assert opts == {} and record["profile"] == "paper"
    opts, record = cpu_settings(["rise", "smoothgrad"], "cpu", False, {"rise": {"n_masks": 3}})
    assert opts == {"rise": {"n_masks": 3}, "smoothgrad": CPU_SETTINGS["smoothgrad"]}
    assert record["changed"] == {"smoothgrad": CPU_SETTINGS["smoothgrad"]}


def test_a_long_run_names_the_settings_that_shorten_it():
    model, x = TinyCNN(num_classes=5).eval(), torch.randn(2, 3, 32, 32)
    buf = io.StringIO()
    rows = announce(model, x, ["rise", "gradcam"], {"rise": {"n_masks": 2_000_000}}, file=buf)
    assert rows == 2 * 2_000_001 + 2
    assert "to make it shorter" in buf.getvalue() and "rise.n_masks" in buf.getvalue()
    buf = io.StringIO()
    announce(model, x, ["gradcam"], {}, file=buf)
    assert "shorter" not in buf.getvalue() and "about 2 model rows" in buf.getvalue()


def _sanity(tmp_path, *extra):
    out = tmp_path / "san"
    assert main(["sanity", str(_image(tmp_path)), "--model", "tiny_cnn", "--size", "32", "--methods", "gradient",
                 "--granularity", "modules", "--out", str(out), *extra]) == 0
    return json.loads((out / "sanity.json").read_text())


def _n_steps(data):
    return len(data["steps"])


def test_sanity_on_a_cpu_stops_after_the_top_steps_and_says_so(tmp_path):
    from interpretorch.cli.sanity import CPU_MAX_STEPS

    cpu = _sanity(tmp_path)
    assert cpu["extra"]["settings"]["profile"] == "cpu" and cpu["extra"]["settings"]["max_steps"] == CPU_MAX_STEPS
    paper = _sanity(tmp_path, "--paper-settings")
    assert paper["extra"]["settings"] == {"profile": "paper", "max_steps": None,
                                          "note": "every block (the paper's cascade)"}
    assert _n_steps(cpu) <= CPU_MAX_STEPS < _n_steps(paper)
    given = _sanity(tmp_path, "--max-steps", "2")
    assert given["extra"]["settings"]["max_steps"] == 2 and _n_steps(given) <= 2


def test_the_sanity_page_states_its_settings_in_words(tmp_path):
    from interpretorch.cli.sanity import CPU_MAX_STEPS

    _sanity(tmp_path)
    page = (tmp_path / "san" / "index.html").read_text()
    assert f"the top {CPU_MAX_STEPS} randomization steps" in page and "{&#39;profile" not in page
    _sanity(tmp_path, "--paper-settings")
    assert "Settings: the papers&#x27; settings (every block (the paper&#x27;s cascade))." in \
        (tmp_path / "san" / "index.html").read_text()


def _data_run(tmp_path, *extra):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
    out = tmp_path / ("data-out" + "".join(extra).replace("-", "_").replace("=", "_").replace(".", "_"))
    assert main(["evaluate", "--data", str(data), "--model", "tiny_cnn", "--size", "32", "--methods",
                 "gradcam,integrated_gradients", "--metrics", "deletion,insertion", "--out", str(out), *extra]) == 0
    return json.loads((out / "manifest.json").read_text()), (out / "index.html").read_text()


def test_a_cpu_dataset_run_uses_the_lighter_settings_for_methods_and_metrics_and_says_so(tmp_path):
    from interpretorch.metrics.evaluate import CPU_METRIC_SETTINGS

    manifest, page = _data_run(tmp_path)
    steps = CPU_SETTINGS["integrated_gradients"]["steps"]
    step = CPU_METRIC_SETTINGS["deletion"]["step"]
    assert manifest["settings"]["profile"] == "cpu"
    assert manifest["options"]["integrated_gradients"] == {"steps": steps}
    assert manifest["metric_options"] == {"deletion": {"step": step}, "insertion": {"step": step}}
    assert f"deletion: step={step}" in page and "--paper-settings" in page
    manifest, page = _data_run(tmp_path, "--option", "deletion.step=0.1")  # the user's option wins
    assert manifest["metric_options"]["deletion"] == {"step": 0.1}
    assert manifest["metric_options"]["insertion"] == {"step": step}
    manifest, page = _data_run(tmp_path, "--paper-settings")
    assert manifest["settings"]["profile"] == "paper" and manifest["metric_options"] == {}
    assert "integrated_gradients" not in manifest["options"] and "Settings: the papers" in page
