"""The shipped tiny detector and tiny segmenter: ground truth for explaining detections and segmentation regions.

Both are trained here on the seeded multi-object scenes of ``data.synthetic.make_scene_set`` (1 to 3 shapes of
distinct classes on textured backgrounds), so tests can check an explanation against each object's known box and
mask. ``python -m interpretorch.models.scene_models detector --out PATH`` (or ``segmenter``) retrains them on the
CPU, single-threaded and seeded: the same config gives the same weights on the same platform. The packaged weights
(``weights/tiny_detector.pt``, ``weights/tiny_segmenter.pt``) are checked against their sha256 when loaded.

- ``TinyDetector`` is CenterNet-style (Zhou 2019, "Objects as Points"): a conv backbone at stride 4, a per-cell head
  (a class heatmap, a box size and a centre offset), and the decoding of the top peaks above a score threshold
  inside ``forward``, so ``model(x)`` returns what torchvision's detectors return in eval mode, one dict per image
  of ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,) and ``scores`` (N,), the scores differentiable w.r.t. ``x``
  (the boxes too when ``box_gradients``).
  The head acts on each cell's features as tokens (linear layers), so the last spatial layer, the one CAM methods
  find by default, is the backbone's output.
- ``TinySegmenter`` returns torchvision's segmentation output ``{"out": (B, 5, H, W) logits}``, class 0 the
  background and class ``k + 1`` the shape ``SHAPES[k]``.
"""
from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.data.synthetic import SHAPES, SceneSet, make_scene_set
from interpretorch.models.preprocess import Preprocess
from interpretorch.training import finish, seeded_single_thread

__all__ = ["TinyDetector", "TinySegmenter", "DetectorConfig", "SegmenterConfig", "train_tiny_detector",
           "train_tiny_segmenter", "load_tiny_detector", "load_tiny_segmenter", "detection_ap", "mean_iou",
           "PREPROCESS", "SEGMENTER_CLASSES", "box_iou"]

PREPROCESS = Preprocess(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
SEGMENTER_CLASSES = ("background",) + SHAPES

# sha256 of the packaged weights files, checked at every load of a packaged file
SHA256 = {
    "tiny_detector": "4bb8783b5f94872539e77aaf174f72b47e2463d64f4296de8dae223257b73635",
    "tiny_segmenter": "ebe7af6d886e4c68851ea1c285317f5f7418ba4193c5f1b468ec671f7fcdad25",
}


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-9)


class TinyDetector(nn.Module):
    """A CenterNet-style detector of the scene shapes: list of ``{boxes, labels, scores}`` per image."""

    stride = 4

    def __init__(self, num_classes: int = len(SHAPES), width: int = 48, score_threshold: float = 0.3,
                 max_detections: int = 10, box_gradients: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        # Boxes are decoded without gradient unless asked: a detection target adds the box's IoU to its score
        # (pytorch-grad-cam's FasterRCNNBoxScoreTarget), and the gradient of that IoU through the size / offset
        # head then dominates the CAM weights (benchmarks/README.md, "Explaining detections").
        self.box_gradients = bool(box_gradients)
        self.backbone = nn.Sequential(
            _conv(3, 16), _conv(16, 32, 2), _conv(32, width, 2), _conv(width, width),
            _conv(width, width, dilation=2))
        # per-cell head as linear layers on (B, cells, C) tokens: class heatmap logits, log box size, centre offset
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_classes + 4))
        with torch.no_grad():
            self.head[2].bias[:num_classes].fill_(-2.19)  # a prior of 0.1 on every cell (CenterNet)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, K, h, w) heatmap logits, (B, 2, h, w) log box size (w, h) in strides, (B, 2, h, w) centre offset."""
        feat = self.backbone(x)
        b, _, h, w = feat.shape
        out = self.head(feat.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
        k = self.num_classes
        return out[:, :k], out[:, k:k + 2], torch.sigmoid(out[:, k + 2:k + 4])

    def decode(self, logits: torch.Tensor, size: torch.Tensor, offset: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The detections of the heads' outputs: per image the top peaks of the heatmap above the threshold."""
        heat = torch.sigmoid(logits)
        if not self.box_gradients:
            size, offset = size.detach(), offset.detach()
        b, k, h, w = heat.shape
        with torch.no_grad():
            peak = heat == F.max_pool2d(heat, 3, 1, 1)
        flat = (heat * peak).flatten(1)
        top = flat.topk(min(self.max_detections, flat.shape[1]), dim=1)
        out = []
        for i in range(b):
            keep = top.values[i] > self.score_threshold
            idx = top.indices[i][keep]
            label, cell = idx // (h * w), idx % (h * w)
            cy, cx = cell // w, cell % w
            off = offset[i].flatten(1)[:, cell]
            wh = torch.exp(size[i].flatten(1)[:, cell]) * self.stride
            centre_x = (cx + off[0]) * self.stride
            centre_y = (cy + off[1]) * self.stride
            boxes = torch.stack([centre_x - wh[0] / 2, centre_y - wh[1] / 2, centre_x + wh[0] / 2,
                                 centre_y + wh[1] / 2], dim=1)
            out.append({"boxes": boxes, "labels": label, "scores": flat[i][idx]})
        return out

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.decode(*self.heads(x))


class TinySegmenter(nn.Module):
    """A small encoder-decoder segmenter of the scene shapes: ``{"out": (B, 1 + classes, H, W) logits}``."""

    def __init__(self, num_classes: int = len(SEGMENTER_CLASSES), width: int = 48) -> None:
        super().__init__()
        self.stem = _conv(3, 16)
        self.backbone = nn.Sequential(_conv(16, 32, 2), _conv(32, width, 2), _conv(width, width),
                                      _conv(width, width, dilation=2))
        self.reduce = nn.Sequential(nn.Conv2d(width, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fuse = _conv(32, 16)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.stem(x)
        deep = self.reduce(self.backbone(low))
        up = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.classifier(self.fuse(torch.cat([up, low], dim=1)))}


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that determines the detector's trained weights."""

    seed: int = 0
    data_seed: int = 11
    val_seed: int = 12
    n_train: int = 3000
    n_val: int = 300
    width: int = 48
    epochs: int = 10
    batch_size: int = 32
    lr: float = 4e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that determines the segmenter's trained weights."""

    seed: int = 0
    data_seed: int = 21
    val_seed: int = 22
    n_train: int = 2000
    n_val: int = 300
    width: int = 48
    epochs: int = 8
    batch_size: int = 32
    lr: float = 4e-3
    weight_decay: float = 1e-4


def _flip(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                                  torch.Tensor, torch.Tensor]:
    """Random horizontal / vertical flips per image (the shapes' classes are flip invariant)."""
    fh = torch.rand(x.shape[0], generator=gen) < 0.5
    fv = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(fh[:, None, None, None], x.flip(3), x)
    x = torch.where(fv[:, None, None, None], x.flip(2), x)
    if y is not None:
        y = torch.where(fh[:, None, None], y.flip(2), y)
        y = torch.where(fv[:, None, None], y.flip(1), y)
    return x, y, fh, fv


def _detector_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor], k: int, grid: int, stride: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet training targets: Gaussian heatmaps (B, K, g, g), log size and offset (B, 2, g, g), centre mask."""
    b = len(boxes)
    heat = torch.zeros(b, k, grid, grid)
    size = torch.zeros(b, 2, grid, grid)
    offset = torch.zeros(b, 2, grid, grid)
    centre = torch.zeros(b, grid, grid, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    for i, (bx, lb) in enumerate(zip(boxes, labels)):
        for box, c in zip(bx, lb):
            cx, cy = float(box[0] + box[2]) / 2 / stride, float(box[1] + box[3]) / 2 / stride
            w, h = float(box[2] - box[0]) / stride, float(box[3] - box[1]) / stride
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            sigma = max(0.5, (w + h) / 2 / 6)
            g = torch.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma ** 2))
            heat[i, int(c)] = torch.maximum(heat[i, int(c)], g)
            size[i, :, iy, ix] = torch.tensor([w, h]).log()
            offset[i, :, iy, ix] = torch.tensor([cx - ix, cy - iy])
            centre[i, iy, ix] = True
    return heat, size, offset, centre


def _flip_boxes(boxes: list[torch.Tensor], fh: torch.Tensor, fv: torch.Tensor, size: int) -> list[torch.Tensor]:
    out = []
    for bx, h, v in zip(boxes, fh.tolist(), fv.tolist()):
        bx = bx.clone()
        if h:
            bx[:, [0, 2]] = size - bx[:, [2, 0]]
        if v:
            bx[:, [1, 3]] = size - bx[:, [3, 1]]
        out.append(bx)
    return out


def detector_loss(model: TinyDetector, x: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor]
                  ) -> torch.Tensor:
    """CenterNet's loss: penalty-reduced focal loss on the heatmap, L1 on log size and offset at the centres."""
    logits, size, offset = model.heads(x)
    heat_t, size_t, off_t, centre = _detector_targets(boxes, labels, model.num_classes, logits.shape[-1],
                                                      model.stride)
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat_t == 1
    n_pos = max(int(pos.sum()), 1)
    focal = -(torch.log(p) * (1 - p) ** 2 * pos).sum() \
        - (torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * ~pos).sum()
    m = centre[:, None].expand_as(size)
    reg = (size - size_t).abs()[m].sum() + (offset - off_t).abs()[m].sum()
    return (focal + reg) / n_pos


def _optimizer(model: nn.Module, lr: float, weight_decay: float, steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)


def detection_ap(model: TinyDetector, scenes: SceneSet, iou: float = 0.5, batch_size: int = 100) -> float:
    """Mean over classes of the average precision (all-point interpolated, as VOC 2010+) at IoU ``iou``."""
    model.eval()
    dets: list[tuple[float, int, int, torch.Tensor]] = []  # score, class, image, box
    with torch.no_grad():
        for s in range(0, len(scenes), batch_size):
            for j, d in enumerate(model(PREPROCESS.normalize(scenes.images[s:s + batch_size]))):
                dets += [(float(sc), int(c), s + j, bx) for sc, c, bx in zip(d["scores"], d["labels"], d["boxes"])]
    aps = []
    for c in range(model.num_classes):
        gts = {i: scenes.boxes[i][scenes.labels[i] == c] for i in range(len(scenes))}
        n_gt = sum(len(g) for g in gts.values())
        if n_gt == 0:
            continue
        used = {i: torch.zeros(len(g), dtype=torch.bool) for i, g in gts.items()}
        tp = []
        for score, cls, i, bx in sorted((d for d in dets if d[1] == c), key=lambda d: -d[0]):
            g = gts[i]
            hit = False
            if len(g):
                ious = box_iou(bx[None], g)[0]
                j = int(ious.argmax())
                if ious[j] >= iou and not used[i][j]:
                    used[i][j] = hit = True
            tp.append(hit)
        t = torch.tensor(tp, dtype=torch.float32)
        recall = torch.cat([torch.zeros(1), t.cumsum(0) / n_gt])
        precision = torch.cat([torch.ones(1), t.cumsum(0) / torch.arange(1, len(t) + 1)])
        for k in range(len(precision) - 2, -1, -1):  # the precision envelope
            precision[k] = torch.maximum(precision[k], precision[k + 1])
        aps.append(float(((recall[1:] - recall[:-1]) * precision[1:]).sum()))
    return sum(aps) / len(aps)


def mean_iou(model: TinySegmenter, scenes: SceneSet, batch_size: int = 100) -> float:
    """Mean over the classes (background included) of the IoU of predicted and true pixel classes."""
    model.eval()
    truth = scenes.semantic
    inter = torch.zeros(len(SEGMENTER_CLASSES))
    union = torch.zeros(len(SEGMENTER_CLASSES))
    with torch.no_grad():
        for s in range(0, len(scenes), batch_size):
            pred = model(PREPROCESS.normalize(scenes.images[s:s + batch_size]))["out"].argmax(1)
            t = truth[s:s + batch_size]
            for c in range(len(SEGMENTER_CLASSES)):
                inter[c] += ((pred == c) & (t == c)).sum()
                union[c] += ((pred == c) | (t == c)).sum()
    return float((inter / union.clamp(min=1)).mean())


def train_tiny_detector(config: DetectorConfig = DetectorConfig(), verbose: bool = False
                        ) -> tuple[TinyDetector, float]:
    """Train the detector on seeded scenes from scratch; returns it (eval mode) and its validation mAP at IoU 0.5."""
    with seeded_single_thread(config.seed):
        train = make_scene_set(config.n_train, seed=config.data_seed)
        val = make_scene_set(config.n_val, seed=config.val_seed)
        x = PREPROCESS.normalize(train.images)
        model = TinyDetector(width=config.width)
        steps = config.epochs * -(-config.n_train // config.batch_size)
        opt, sched = _optimizer(model, config.lr, config.weight_decay, steps)
        gen = torch.Generator().manual_seed(config.seed)
        start = time.perf_counter()
        for epoch in range(config.epochs):
            model.train()
            perm = torch.randperm(config.n_train, generator=gen)
            for s in range(0, config.n_train, config.batch_size):
                idx = perm[s:s + config.batch_size].tolist()
                rows, _, fh, fv = _flip(x[idx], None, gen)
                boxes = _flip_boxes([train.boxes[i] for i in idx], fh, fv, x.shape[-1])
                loss = detector_loss(model, rows, boxes, [train.labels[i] for i in idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if verbose:
                print(f"epoch {epoch + 1}/{config.epochs}: loss {loss.item():.3f}, val mAP@0.5 "
                      f"{detection_ap(model, val):.3f}, {time.perf_counter() - start:.1f} s", flush=True)
        return finish(model), detection_ap(model, val)


def train_tiny_segmenter(config: SegmenterConfig = SegmenterConfig(), verbose: bool = False
                         ) -> tuple[TinySegmenter, float]:
    """Train the segmenter on seeded scenes from scratch; returns it (eval mode) and its validation mean IoU."""
    with seeded_single_thread(config.seed):
        train = make_scene_set(config.n_train, seed=config.data_seed)
        val = make_scene_set(config.n_val, seed=config.val_seed)
        x, y = PREPROCESS.normalize(train.images), train.semantic
        model = TinySegmenter(width=config.width)
        steps = config.epochs * -(-config.n_train // config.batch_size)
        opt, sched = _optimizer(model, config.lr, config.weight_decay, steps)
        gen = torch.Generator().manual_seed(config.seed)
        start = time.perf_counter()
        for epoch in range(config.epochs):
            model.train()
            perm = torch.randperm(config.n_train, generator=gen)
            for s in range(0, config.n_train, config.batch_size):
                idx = perm[s:s + config.batch_size]
                rows, t, _, _ = _flip(x[idx], y[idx], gen)
                loss = F.cross_entropy(model(rows)["out"], t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if verbose:
                print(f"epoch {epoch + 1}/{config.epochs}: loss {loss.item():.3f}, val mIoU "
                      f"{mean_iou(model, val):.3f}, {time.perf_counter() - start:.1f} s", flush=True)
        return finish(model), mean_iou(model, val)


def _save(model: nn.Module, path: str | Path, config: object, metric: str, value: float) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": asdict(config), metric: value}, path)
    return path


def _read(name: str, path: str | Path | None, sha256: str | None) -> dict:
    """The checkpoint at ``path`` (the packaged ``name`` when None, sha256-checked)."""
    if path is None:
        from importlib import resources

        path = resources.files("interpretorch.models").joinpath(f"weights/{name}.pt")
        sha256 = sha256 or SHA256[name]
    with open(path, "rb") as fh:  # works for package resources and plain paths alike
        raw = fh.read()
    if sha256:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise ValueError(f"{str(path)!r} has sha256 {digest}, expected {sha256}: not the shipped {name}")
    ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a {name} checkpoint (expected state_dict and config)")
    return ckpt


def load_tiny_detector(path: str | Path | None = None, device: str | torch.device = "cpu",
                       sha256: str | None = None):
    """The trained detector as a LoadedModel (eval mode; the packaged, sha256-checked weights when ``path`` is
    None). Its CAM layer is the backbone (the last spatial layer, the one CAM methods find by default)."""
    from interpretorch.models.loaded import LoadedModel

    ckpt = _read("tiny_detector", path, sha256)
    model = TinyDetector(width=DetectorConfig(**ckpt["config"]).width)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval().to(device)
    return LoadedModel(model, PREPROCESS, list(SHAPES), "backbone", "tiny_detector")


def load_tiny_segmenter(path: str | Path | None = None, device: str | torch.device = "cpu",
                        sha256: str | None = None):
    """The trained segmenter as a LoadedModel (eval mode; the packaged, sha256-checked weights when ``path`` is
    None). Its CAM layer is the encoder's last block (stride 4; the decoder's layers come after it), as
    pytorch-grad-cam's segmentation tutorial takes DeepLabV3's ``backbone.layer4``. Not ``fuse``, the layer before
    the 1x1 classifier: Grad-CAM there is the class's logit map itself, ReLU(logit - bias) (tested), so it only
    repeats the segmentation (benchmarks/README.md, "Explaining detections")."""
    from interpretorch.models.loaded import LoadedModel

    ckpt = _read("tiny_segmenter", path, sha256)
    model = TinySegmenter(width=SegmenterConfig(**ckpt["config"]).width)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval().to(device)
    return LoadedModel(model, PREPROCESS, list(SEGMENTER_CLASSES), "backbone", "tiny_segmenter")


def main(argv: list[str] | None = None) -> None:
    """Command line: train the tiny detector or segmenter and write its weights."""
    import sys

    from interpretorch.training import train_command

    argv = list(sys.argv[1:] if argv is None else argv)
    which = argv.pop(0) if argv and argv[0] in ("detector", "segmenter") else None
    if which is None:
        raise SystemExit("usage: python -m interpretorch.models.scene_models {detector,segmenter} --out PATH ...")

    def run(config: DetectorConfig | SegmenterConfig, out: str) -> str:
        start = time.perf_counter()
        if which == "detector":
            model, value = train_tiny_detector(config, verbose=True)
            path, what = _save(model, out, config, "val_map50", value), "validation mAP@0.5"
        else:
            model, value = train_tiny_segmenter(config, verbose=True)
            path, what = _save(model, out, config, "val_miou", value), "validation mean IoU"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"{what} {value:.4f}; trained in {time.perf_counter() - start:.1f} s; wrote {path} (sha256 {digest})"

    train_command(f"python -m interpretorch.models.scene_models {which}", f"Train the tiny {which} on seeded scenes.",
                  DetectorConfig if which == "detector" else SegmenterConfig, run, argv)


if __name__ == "__main__":
    main()
