"""Make the README's detection figure: the shipped tiny detector's boxes on generated scenes, each detection with its
own Grad-CAM map (all detections of a scene explained in one ``explain_targets`` call).

    python scripts/detection_figure.py            # writes docs/detection_figure.png (seconds on one CPU core)
"""
from __future__ import annotations

import argparse
from pathlib import Path

SCALE = 3  # 64 px scenes drawn at 192 px


def main() -> None:
    """Explain every detection of four scenes and tile input + one map per detection into one PNG."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "detection_figure.png"))
    p.add_argument("--seed", type=int, default=1000)
    args = p.parse_args()

    import torch
    from PIL import Image, ImageDraw

    from interpretorch.attribution.registry import explain_targets
    from interpretorch.core.targets import DetectionTarget
    from interpretorch.data.synthetic import make_scene_set
    from interpretorch.models import load_model

    torch.set_num_threads(1)
    det = load_model("tiny_detector")
    scenes = make_scene_set(12, seed=args.seed)
    picks = [i for i in range(len(scenes)) if len(scenes.boxes[i]) >= 2][:3] + \
        [i for i in range(len(scenes)) if len(scenes.boxes[i]) == 1][:1]
    colours = [(255, 60, 60), (60, 200, 255), (255, 220, 40)]
    tile, label_h = 64 * SCALE, 16
    fig = Image.new("RGB", (tile * 4, len(picks) * (tile + label_h)), "white")
    draw = ImageDraw.Draw(fig)
    for row, i in enumerate(picks):
        x = det.preprocess.normalize(scenes.images[i])
        with torch.no_grad():
            found = det.model(x[None])[0]
        targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(found["boxes"], found["labels"])]
        maps = explain_targets(det.model, x, targets, "gradcam", layer=det.cam_layer, normalize=True)
        pictures = [scenes.images[i][None]] + [scenes.images[i][None]] * len(targets)
        overlays = maps.overlay(torch.cat(pictures[1:])) if targets else []
        y0 = row * (tile + label_h)
        base = Image.fromarray((scenes.images[i].permute(1, 2, 0).numpy() * 255).astype("uint8"))
        fig.paste(base.resize((tile, tile), Image.NEAREST), (0, y0 + label_h))
        draw.text((4, y0 + 2), "detections", fill="black")
        for k, (box, c, s) in enumerate(zip(found["boxes"], found["labels"], found["scores"])):
            xy = [float(v) * SCALE for v in box]
            draw.rectangle([xy[0], y0 + label_h + xy[1], xy[2], y0 + label_h + xy[3]], outline=colours[k % 3], width=2)
            over = Image.fromarray(overlays[k]).resize((tile, tile), Image.BILINEAR)
            fig.paste(over, ((k + 1) * tile, y0 + label_h))
            draw.rectangle([(k + 1) * tile + xy[0], y0 + label_h + xy[1], (k + 1) * tile + xy[2],
                            y0 + label_h + xy[3]], outline=colours[k % 3], width=2)
            draw.text(((k + 1) * tile + 4, y0 + 2), f"{det.class_names[int(c)]} {float(s):.2f}: Grad-CAM",
                      fill=colours[k % 3] if k != 2 else (160, 130, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
