"""Every code block of the README runs as written (issue 33): its ``python`` blocks, and the ``interpretorch``
command lines of its ``bash`` blocks, in a scratch folder holding ``cat.jpg`` and ``cup.jpg`` (scikit-image's
chelsea and coffee photos). The commands get the small settings of ``SMALL`` appended (argparse keeps the last
value of an option), so the whole README runs in about a minute; the synopses (plain blocks) are not run."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

from interpretorch.cli import main
from interpretorch.data.samples import sample_images

README = Path(__file__).parents[1] / "README.md"
# command -> options appended to each README line of that command: smaller inputs and fewer steps, same command
SMALL = {"explain": ["--size", "64"], "evaluate": ["--size", "64"], "sanity": ["--size", "64"],
         "explain-text": ["--ig-steps", "4"]}
# README text -> what the test runs instead, in the python blocks: fewer steps, samples and images
SMALL_PYTHON = {'mode="cascading", max_steps=3)': 'mode="cascading", max_steps=1)',
                "evaluate=True)": 'evaluate=True, metrics=["deletion"])',
                "samples=200)": "samples=16)",
                "torch.rand(20, 3, 224, 224": "torch.rand(6, 3, 224, 224",
                'concept_set("stripes", 20, 224)': 'concept_set("stripes", 6, 224)'}


def blocks(lang: str) -> list[str]:
    """The README's fenced code blocks of language ``lang``."""
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands() -> list[str]:
    """Every ``interpretorch ...`` command of the README's bash blocks (the part after ``&&`` of an install line)."""
    found = []
    for block in blocks("bash"):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part.startswith("interpretorch "):
                    found.append(part)
    return found


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """A working folder with cat.jpg and cup.jpg."""
    photos = dict(sample_images())
    Image.fromarray(photos["chelsea"]).save(tmp_path / "cat.jpg")
    Image.fromarray(photos["coffee"]).save(tmp_path / "cup.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_code_to_run():
    assert len(blocks("python")) >= 5 and len(commands()) >= 8
    text = "".join(blocks("python"))
    assert all(original in text for original in SMALL_PYTHON), "SMALL_PYTHON names text the README no longer has"
    assert all(c.split()[1] in {*SMALL, "layers", "methods", "make-probe", "dissect", "explain-text"}
               for c in commands())


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_written(index, scratch):
    code = blocks("python")[index]
    for original, small in SMALL_PYTHON.items():
        code = code.replace(original, small)
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})


def test_command_lines_run_as_written(scratch, capsys):
    for line in commands():  # in order: make-probe writes what dissect reads
        argv = shlex.split(line)[1:]
        code = main(argv + SMALL.get(argv[0], []))
        err = capsys.readouterr().err
        assert code == 0, f"{line}: exit {code}: {err.strip().splitlines()[-1:]}"
    assert (scratch / "interpretorch-report" / "index.html").is_file()
    assert (scratch / "interpretorch-evaluate" / "index.html").is_file()
