"""Why a dissect page's top-activating images show no region: measured with the trained probe CNN (the weights
``test_rotation.py`` uses) on 100 held-out probe images at 64 px (seed 1), quantile 0.005.

For each unit of conv3.2 and conv4.2 and each of its 8 top images: is any upsampled pixel above the unit's
threshold, and if not, is the feature map's own peak above it (so the bilinear upsampling lowered an isolated
peak) or not (fewer than 8 images exceed the threshold)? Figures in ``test_report.py``'s docstring.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python tests/dissect/measure_empty_regions.py``
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from interpretorch.capture import capture
from interpretorch.core.runningstats import upsample_units
from interpretorch.dissect.broden import BrodenDataset
from interpretorch.dissect.probe import make_probe
from interpretorch.dissect.run import dissect
from interpretorch.dissect.train import PROBE_MEAN, PROBE_STD, ProbeCNN


def main() -> None:
    """Count the empty top images of conv3.2 and conv4.2 by cause."""
    torch.set_num_threads(1)
    model = ProbeCNN()
    model.load_state_dict(torch.load(Path(__file__).parent / "data" / "probe_cnn_trained.pt", weights_only=True))
    model.eval()
    ds = BrodenDataset(make_probe(Path(tempfile.mkdtemp()) / "p", n_images=100, size=64, seed=1),
                       mean=PROBE_MEAN, std=PROBE_STD)
    for layer in ("conv3.2", "conv4.2"):
        ld = dissect(model, ds, [layer], batch_size=50).layers[layer]
        t = ld.thresholds
        empty = lowered = shape = 0
        for u in range(ld.units):
            for i in (int(v) for v in ld.top_indices[u].tolist() if v >= 0):
                x = ds[i]["image"][None]
                with capture(model, [layer], grad=False) as rec, torch.no_grad():
                    model(x)
                a = rec[layer][:, u:u + 1].float()
                shape = tuple(a.shape[-2:])
                if not (upsample_units(a, x.shape[-2:]) > t[u]).any():
                    empty += 1
                    lowered += float(a.max()) > float(t[u])
        print(f"{layer} ({ld.units} units, {shape} maps): {empty} of {int((ld.top_indices >= 0).sum())} top images "
              f"show no region; on {lowered} the map's peak is above the threshold (lowered by the upsampling), "
              f"on {empty - lowered} it is not")


if __name__ == "__main__":
    main()
