"""Rows in channels-last memory order where the model accepts them, the plain layout where it does not."""
import torch
from torch import nn

from interpretorch.attribution import explain
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.models import TinyCNN


class ViewNet(nn.Module):
    """Calls ``.view`` on a feature map: refuses channels-last rows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


def test_channels_last_only_where_the_model_accepts_it(snapshot):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    view = ViewNet().eval()
    assert row_layout(view, x) == torch.contiguous_format
    snap = snapshot(view)
    maps = {name: explain(view, x, name, target=1, batch_size=3).maps
            for name in ("integrated_gradients", "deeplift", "feature_ablation")}
    snap.assert_unchanged()
    with torch.no_grad():
        scores = view(x)[:, 1] - view(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(maps["deeplift"].sum((1, 2, 3)), scores, rtol=1e-4, atol=1e-5)
    tiny = TinyCNN().eval()
    assert row_layout(tiny, torch.randn(2, 3, 16, 16)) == torch.channels_last
    assert row_layout(tiny, torch.randn(2, 1, 16, 16)[:, :1]) == torch.contiguous_format  # one channel: no gain
    rows = in_layout(torch.randn(2, 3, 16, 16), torch.channels_last)
    assert rows.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # same values: outputs agree with the plain layout to rounding
        torch.testing.assert_close(tiny(rows), tiny(rows.contiguous()), rtol=1e-5, atol=1e-6)
