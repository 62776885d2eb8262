"""The one train-and-save command line every training script uses."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from interpretorch.training import train_command


@dataclass(frozen=True)
class _Config:
    seed: int = 0
    lr: float = 0.1
    width: int = 8


def test_train_command_reads_every_config_field_and_prints_the_line(capsys):
    seen = []

    def run(config: _Config, out: str) -> str:
        seen.append((config, out))
        return f"wrote {out}"

    line = train_command("prog", "train", _Config, run, ["--out", "w.pt", "--lr", "0.5", "--seed", "3"])
    assert seen == [(_Config(seed=3, lr=0.5, width=8), "w.pt")]
    assert line == "wrote w.pt" and capsys.readouterr().out == "wrote w.pt\n"


def test_train_command_needs_out():
    with pytest.raises(SystemExit) as err:
        train_command("prog", "train", _Config, lambda c, o: "", ["--lr", "0.5"])
    assert err.value.code == 2
