"""`interpretorch dissect --rotate / --checkpoints / --compare`: Network Dissection's experiments from the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from interpretorch.cli import main
from interpretorch.dissect.run import dissect
from interpretorch.dissect.train import PROBE_MEAN, PROBE_STD, ProbeCNN, snapshot_name, train_probe_cnn

MODEL = "interpretorch.dissect.train:ProbeCNN"
NORM = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    d = tmp_path_factory.mktemp("findings") / "probe"
    assert main(["make-probe", str(d), "--images", "12", "--size", "48", "--seed", "3"]) == 0
    return d


def base(probe, out):
    return ["dissect", "--data", str(probe), "--model", MODEL, "--out", str(out), "--quantile", "0.02",
            "--batch-size", "5", *NORM]


def test_rotate_writes_one_dissection_per_alpha_and_the_page(probe, tmp_path, capsys):
    out = tmp_path / "rot"
    assert main(base(probe, out) + ["--layers", "conv2.2,conv4.2", "--rotate", "1,0", "--seed", "3",
                                      "--report-units", "3"]) == 0
    plain = tmp_path / "plain"
    assert main(base(probe, plain) + ["--layers", "conv2.2,conv4.2", "--no-report"]) == 0
    capsys.readouterr()
    a0 = json.loads((out / "alpha_0" / "summary.json").read_text())
    assert a0["layers"] == json.loads((plain / "summary.json").read_text())["layers"]  # alpha 0: the plain run
    series = json.loads((out / "rotation.json").read_text())
    assert [p["x"] for p in series["points"]] == [0.0, 1.0]
    a1 = json.loads((out / "alpha_1" / "summary.json").read_text())
    assert series["points"][1]["layers"]["conv4.2"]["detectors"] == a1["layers"]["conv4.2"]["detectors"]
    assert (out / "rotation.png").stat().st_size > 0 and (out / "alpha_1" / "conv4.2_tally.csv").exists()
    html = (out / "rotation.html").read_text()
    d0, d1 = a0["layers"]["conv4.2"]["detectors"], a1["layers"]["conv4.2"]["detectors"]
    assert f"conv4.2 {d0} \u2192 {d1} of 64" in html and series["flags"][0]["code"] == "one_draw"
    obj = a1["layers"]["conv4.2"]
    assert (f"<td class=\"l\">1</td><td class=\"l\">conv4.2</td><td>{obj['detectors_per_category']['color']} "
            f"({obj['unique_concepts_per_category']['color']})</td>") in html
    unit_page = (out / "alpha_1" / "conv4.2.html").read_text()  # the rotated units, with their top images
    assert f"{d1}/64</b> units covering" in unit_page and "rotated by Q^1 (seed 3)" in unit_page
    # a resume must use the same seed and alphas, and says which differs
    assert main(base(probe, out) + ["--layers", "conv2.2,conv4.2", "--rotate", "0,1", "--seed", "4", "--resume"]) == 2
    assert "used --seed 3, not 4" in capsys.readouterr().err
    assert main(base(probe, out) + ["--layers", "conv2.2,conv4.2", "--rotate", "0,0.5", "--seed", "3",
                                    "--resume"]) == 2
    assert "used --rotate 0,1, not 0,0.5" in capsys.readouterr().err
    before = (out / "alpha_1" / "conv4.2_tally.csv").read_bytes()
    assert main(base(probe, out) + ["--layers", "conv2.2,conv4.2", "--rotate", "0,1", "--seed", "3", "--resume",
                                    "--no-report"]) == 0
    assert (out / "alpha_1" / "conv4.2_tally.csv").read_bytes() == before


def test_checkpoints_dissect_each_training_snapshot(probe, tmp_path, capsys):
    snaps = tmp_path / "snaps"
    final = train_probe_cnn(probe, epochs=1, batch_size=6, snapshots=[0, 1, 2], snapshot_dir=snaps)
    assert sorted(p.name for p in snaps.iterdir()) == [snapshot_name(s) for s in (0, 1, 2)]
    first = torch.load(snaps / snapshot_name(0), weights_only=True)
    assert all(torch.equal(v, first[k]) for k, v in ProbeCNN(seed=0).state_dict().items())  # before training
    last = torch.load(snaps / snapshot_name(2), weights_only=True)
    assert all(torch.equal(v, last[k]) for k, v in final.state_dict().items())  # 12 images / 6: 2 steps
    out = tmp_path / "ck"
    assert main(base(probe, out) + ["--layers", "conv4.2", "--checkpoints", str(snaps)]) == 0
    assert "step000002.pt: conv4.2" in capsys.readouterr().out
    series = json.loads((out / "checkpoints.json").read_text())
    assert series["x_label"] == "step" and [p["x"] for p in series["points"]] == [0, 1, 2]
    from interpretorch.dissect.broden import BrodenDataset
    ds = BrodenDataset(probe, mean=PROBE_MEAN, std=PROBE_STD)
    net = ProbeCNN()
    net.load_state_dict(last)
    direct = dissect(net.eval(), ds, ["conv4.2"], quantile=0.02, batch_size=5).layers["conv4.2"].summary()
    assert series["points"][2]["layers"]["conv4.2"] == direct
    assert (out / "checkpoints.png").exists() and "detectors over training" in (out / "checkpoints.html").read_text()


def test_compare_pages_unique_detectors_per_run(probe, tmp_path, capsys):
    runs = []
    for seed, name in ((0, "a"), (1, "b")):
        torch.save(ProbeCNN(seed=seed).state_dict(), tmp_path / f"{name}.pt")
        runs.append(tmp_path / name)
        assert main(base(probe, runs[-1]) + ["--layers", "conv1.2,conv3.2", "--weights", str(tmp_path / f"{name}.pt"),
                                             "--no-report"]) == 0
    out = tmp_path / "cmp"
    assert main(["dissect", "--compare", *map(str, runs), "--out", str(out)]) == 0
    entries = json.loads((out / "compare.json").read_text())
    assert [(e["run"], e["layer"]) for e in entries] == [("a", "conv1.2"), ("a", "conv3.2"), ("b", "conv1.2"),
                                                         ("b", "conv3.2")]
    for e in entries:
        s = json.loads((tmp_path / e["run"] / "summary.json").read_text())["layers"][e["layer"]]
        assert e["unique_concepts"] == s["unique_concepts"] == sum(e["unique_per_category"].values())
    html = (out / "compare.html").read_text()
    assert "unique detectors per layer and model" in html and (out / "compare.png").exists()
    assert main(["dissect", "--compare", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no summary.json there" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--rotate", "1", "--checkpoints", "x.pt"], "--rotate and --checkpoints cannot be combined"),
    (["--checkpoints", "missing.pt"], "no such file or folder"),
])
def test_experiment_user_errors(probe, tmp_path, capsys, extra, message):
    assert main(base(probe, tmp_path / "o") + ["--layers", "conv4.2", *extra]) == 2
    assert message in capsys.readouterr().err


def test_rotate_refuses_alpha_outside_0_1(probe, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(base(probe, tmp_path / "o") + ["--layers", "conv4.2", "--rotate", "0,1.5"])
    assert e.value.code == 2 and "alpha must lie in [0, 1]" in capsys.readouterr().err


def test_data_is_required_without_compare(capsys):
    assert main(["dissect", "--model", MODEL, "--layers", "conv4.2"]) == 2
    assert "--data is required" in capsys.readouterr().err
