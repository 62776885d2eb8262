"""The sanity-check paper's views of pixel attributions: absolute grayscale and diverging, 99th-percentile clipping."""
import numpy as np
import pytest
import torch

from interpretorch.explanation import Explanation, abs_grayscale, diverging, reduce_channels
from interpretorch.report.drawing import render_visualization


def _maps(seed=0, shape=(2, 3, 20, 24)):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(shape, generator=g, dtype=torch.float64)
    m[0, :, 3, 4] = 50.0  # one extreme pixel per image, the kind the clipping is for
    m[1, :, 7, 7] = -80.0
    return m


def _grayscale_reference(m: np.ndarray, p: float) -> np.ndarray:
    """The formula of the saliency library used by Adebayo et al. 2018, per image (channels last)."""
    img = np.abs(np.moveaxis(m, 0, -1)).sum(-1)
    vmax, vmin = np.percentile(img, p), img.min()
    return np.clip((img - vmin) / (vmax - vmin), 0, 1)


@pytest.mark.parametrize("p", [99.0, 95.0, 100.0])
def test_abs_grayscale_is_the_papers_formula(p):
    m = _maps()
    out = abs_grayscale(m, p)
    assert out.shape == (2, 20, 24) and out.dtype == torch.float32
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), _grayscale_reference(m[i].numpy(), p), atol=1e-6)
    # 1% of the pixels are clipped to white at the 99th percentile, the rest spread below
    if p == 99.0:
        frac_white = (out >= 1 - 1e-6).double().mean((1, 2))
        assert ((frac_white > 0.005) & (frac_white < 0.02)).all()
        assert out.flatten(1).amin(1).eq(0).all()
        assert abs_grayscale(m, 100.0).median() < 0.5 * out.median()  # without clipping the extreme pixel wins


def test_diverging_keeps_the_sign_and_zero():
    m = _maps(1)
    out = diverging(m, 99.0)
    s = m.sum(1)
    span = torch.quantile(s.abs().flatten(1), 0.99, dim=1)
    torch.testing.assert_close(out.double(), (s / span[:, None, None]).clamp(-1, 1), atol=1e-6, rtol=0)
    assert torch.equal(torch.sign(out), torch.sign(s).float())
    assert out[0, 3, 4] == 1 and out[1, 7, 7] == -1
    frac_clipped = (out.abs() >= 1 - 1e-6).double().mean((1, 2))
    assert ((frac_clipped > 0.005) & (frac_clipped < 0.02)).all()
    # a (B, H, W) map (a CAM) is shown as it is; its negation flips the view
    torch.testing.assert_close(diverging(-s, 99.0), -out)


def test_visualize_renders_uint8_images():
    m = _maps(2)
    e = Explanation(maps=m, method="gradient")
    gray = e.visualize("abs_grayscale")
    assert gray.shape == (2, 20, 24, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 0] == gray[..., 2]).all()
    np.testing.assert_array_equal(gray[..., 0], (abs_grayscale(m).numpy() * 255).round().astype(np.uint8))
    assert gray[0, 3, 4, 0] == 255 and gray.min() == 0
    div = e.visualize("diverging", percentile=99)
    assert div.shape == (2, 20, 24, 3) and div.dtype == np.uint8
    pos, neg = div[0, 3, 4].astype(int), div[1, 7, 7].astype(int)
    assert pos[0] > 200 and pos[2] < 50  # red for positive (bwr)
    assert neg[2] > 200 and neg[0] < 50  # blue for negative
    zero = render_visualization(torch.zeros(1, 3, 4, 4), "diverging")
    assert (zero > 240).all()  # zero is white
    assert (render_visualization(torch.zeros(1, 3, 4, 4), "abs_grayscale") == 0).all()
    viridis = e.visualize("abs_grayscale", cmap="viridis")
    assert viridis.shape == (2, 20, 24, 3) and not (viridis[..., 0] == viridis[..., 2]).all()


def test_sparse_maps_and_errors():
    m = torch.zeros(1, 3, 10, 10)
    m[0, 0, 2, 2] = 3.0  # 99% of the pixels are 0: the 99th percentile is 0, so fall back to the maximum
    g = abs_grayscale(m)
    assert g[0, 2, 2] == 1 and g.sum() == 1
    d = diverging(-m)
    assert d[0, 2, 2] == -1 and d.abs().sum() == 1
    with pytest.raises(ValueError, match="unknown visualisation"):
        render_visualization(m, "heat")
    with pytest.raises(ValueError, match="percentile"):
        abs_grayscale(m, 0)


def test_existing_reductions_unchanged():
    m = _maps(3)
    e = Explanation(maps=m, method="gradient")
    torch.testing.assert_close(e.map2d(), m.abs().sum(1))
    torch.testing.assert_close(reduce_channels(m, "sum"), m.sum(1))
    torch.testing.assert_close(reduce_channels(m, "max_abs"), m.abs().amax(1))
