"""A tiny Vision Transformer for the synthetic localisation set, and the reproducible script that trains it.

``python -m interpretorch.models.vit --out tiny_vit.pt`` trains it from scratch (about a minute or two on two
CPU cores, single-threaded so the weights do not depend on the thread count) and writes
``{"state_dict", "config", "val_accuracy"}``; ``load_tiny_vit`` reads it back. The model is a plain pre-norm
ViT (patch embedding, CLS token, learned positions, blocks of self-attention and a GELU MLP, final LayerNorm and
a linear head on the CLS token) whose attention calls the fused ``F.scaled_dot_product_attention``, as timm's
does, so the attention tools of ``interpretorch.transformers`` are exercised on the fused path.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.data.synthetic import SHAPES, make_localisation_set
from interpretorch.models.preprocess import Preprocess
from interpretorch.training import accuracy, finish, seeded_single_thread, train_command, train_epoch

PREPROCESS = Preprocess(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class Attention(nn.Module):
    """Multi-head self-attention with a packed ``qkv`` projection (timm layout), computed by fused SDPA."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the tokens of ``x`` (B, N, C); ``attn_mask`` is added to (or, bool, selects) the logits."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class PatchEmbed(nn.Module):
    """Patch embedding: one ``patch``-strided convolution (``stem=0``), or the hybrid ViT of Dosovitskiy et al.
    2021: a small convolutional stem (3x3 conv-BN-ReLU blocks with 2x2 max-pooling down to ``patch // 2``) and a
    2x2 stride-2 projection to tokens. A ViT trained in a minute or two on the CPU needs the stem (a plain
    patch embedding stayed at chance for hundreds of steps on the synthetic set)."""

    def __init__(self, patch: int, dim: int, stem: int = 8, bias: bool = True) -> None:
        super().__init__()
        if stem <= 0:
            self.proj = nn.Conv2d(3, dim, patch, stride=patch, bias=bias)
            return
        if patch < 2 or patch & (patch - 1):
            raise ValueError(f"a convolutional stem needs a power-of-two patch size, got {patch}")
        layers: list[nn.Module] = []
        cin, cout, stride = 3, stem, 1
        while True:
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
            if stride * 2 >= patch:
                break
            layers.append(nn.MaxPool2d(2))
            cout, stride = 2 * cout, stride * 2
        layers += [nn.Conv2d(cin, cin, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                   nn.Conv2d(cin, dim, 2, stride=2, bias=bias)]
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images to (B, dim, H / patch, W / patch) patch features."""
        return self.proj(x)


class Mlp(nn.Module):
    """Two linear layers with a GELU between them."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply fc1, GELU, fc2."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, bias=bias)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = nn.LayerNorm(dim, bias=bias)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block on tokens (B, N, C)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small ViT: ``patch``-pixel patches, a CLS token, ``depth`` pre-norm blocks, a linear head on the CLS token.

    At 64 px with 8 px patches the tokens are CLS + an 8 x 8 grid (65 in all); ``blocks.{i}`` give (B, 65, dim)
    outputs and ``blocks.{i}.attn`` are the attention modules.
    """

    def __init__(self, num_classes: int = len(SHAPES), image_size: int = 64, patch: int = 8, dim: int = 64,
                 depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0, bias: bool = True,
                 stem: int = 8, pool: str = "cls") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        self.image_size, self.patch = image_size, patch
        self.grid = (image_size // patch, image_size // patch)
        self.patch_embed = PatchEmbed(patch, dim, stem, bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, num_classes, bias=bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images (B, 3, H, W) as tokens (B, 1 + h*w, dim) with positions added."""
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"TinyViT expects (B, 3, {self.image_size}, {self.image_size}) images, got "
                             f"{tuple(x.shape)}")
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(t.shape[0], -1, -1)
        return torch.cat([cls, t], dim=1) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        t = self.tokens(x)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)
        return self.head(t[:, 0] if self.pool == "cls" else t.mean(1))


@dataclass(frozen=True)
class ViTConfig:
    """Everything that determines the trained weights."""

    seed: int = 0
    data_seed: int = 1
    val_seed: int = 2
    n_train: int = 3000
    n_val: int = 500
    size: int = 64
    patch: int = 8
    dim: int = 64
    depth: int = 4
    num_heads: int = 4
    stem: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05


def _build(config: ViTConfig) -> TinyViT:
    return TinyViT(len(SHAPES), config.size, config.patch, config.dim, config.depth, config.num_heads,
                   stem=config.stem)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips per image (the shapes' classes are flip invariant)."""
    flip_h = torch.rand(x.shape[0], generator=gen) < 0.5
    flip_v = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    return torch.where(flip_v[:, None, None, None], x.flip(2), x)


def train_tiny_vit(config: ViTConfig = ViTConfig(), verbose: bool = False) -> tuple[TinyViT, float]:
    """Train the tiny ViT on the synthetic set from scratch; returns the model (eval mode) and its validation
    accuracy.

    Runs single-threaded with seeded initialisation, data, augmentation and shuffling, so the same config gives
    the same weights on the same platform; the global RNG and thread count are restored afterwards.
    """
    with seeded_single_thread(config.seed):
        train = make_localisation_set(config.n_train, seed=config.data_seed, size=config.size)
        val = make_localisation_set(config.n_val, seed=config.val_seed, size=config.size)
        x, y = PREPROCESS.normalize(train.images), train.labels
        xv, yv = PREPROCESS.normalize(val.images), val.labels
        model = _build(config)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], config.lr)
        steps_per_epoch = -(-config.n_train // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch,
                                                    pct_start=0.15)
        gen = torch.Generator().manual_seed(config.seed)
        start = time.perf_counter()
        for epoch in range(config.epochs):
            loss = train_epoch(model, x, y, opt, gen, config.batch_size, sched, augment=_augment)
            if verbose:
                acc = accuracy(model, xv, yv)
                print(f"epoch {epoch + 1}/{config.epochs}: loss {loss.item():.3f}, val accuracy {acc:.3f}, "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
        return finish(model), accuracy(model, xv, yv)


def save_tiny_vit(model: TinyViT, path: str | Path, config: ViTConfig, val_accuracy: float) -> Path:
    """Write the weights with the config that reproduces them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": asdict(config), "val_accuracy": val_accuracy}, path)
    return path


def load_tiny_vit(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """Read weights written by ``save_tiny_vit`` (the packaged ones when ``path`` is None); returns a
    LoadedModel (eval mode) with its preprocessing."""
    from importlib import resources

    from interpretorch.models.loaded import LoadedModel

    if path is None:
        path = resources.files("interpretorch.models").joinpath("weights/tiny_vit.pt")
    with open(path, "rb") as fh:  # works for package resources and plain paths alike
        ckpt = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a tiny ViT checkpoint (expected state_dict and config)")
    config = ViTConfig(**ckpt["config"])
    model = _build(config)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval().to(device)
    # the CAM layer of a class-token ViT is the input of the last attention: the last block's output reaches the
    # class only through its class token, so its patch tokens get no gradient
    return LoadedModel(model, PREPROCESS, list(SHAPES), f"blocks.{config.depth - 1}.norm1", "tiny_vit")


def main(argv: list[str] | None = None) -> None:
    """Command line: train the tiny ViT and write its weights."""
    def run(config: ViTConfig, out: str) -> str:
        start = time.perf_counter()
        model, acc = train_tiny_vit(config, verbose=True)
        path = save_tiny_vit(model, out, config, acc)
        return f"validation accuracy {acc:.4f}; trained in {time.perf_counter() - start:.1f} s; wrote {path}"
    train_command("python -m interpretorch.models.vit", "Train the tiny ViT on the seeded synthetic localisation set.",
                  ViTConfig, run, argv)


if __name__ == "__main__":
    main()
