"""Make the README's figure from `interpretorch explain` on the bundled sample photos: one row per photo (the input
and its top class), one column per method, the pictures exactly as the report draws them.

    python scripts/readme_figure.py            # writes docs/readme_figure.png (about 5 minutes on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

METHODS = "gradcam,gradcam++,layercam,eigencam,ablationcam,integrated_gradients"
TILE = 120
SHORT = {"integrated_gradients": "int. gradients", "gradient_x_input": "grad x input", "guided_backprop": "guided BP"}


def main() -> None:
    """Run the explain command, then tile its pictures into one small PNG."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "readme_figure.png"))
    p.add_argument("--methods", default=METHODS)
    args = p.parse_args()

    from PIL import Image, ImageDraw, ImageFont

    from interpretorch.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        if cli(["explain", "--methods", args.methods, "--out", str(report)]) != 0:
            raise SystemExit("interpretorch explain failed")
        results = json.loads((report / "results.json").read_text())
        columns = [("input", None)]
        for m in results["method_names"]:
            signed = results["images"][0]["methods"][m]["signed"] is not None
            columns.append((SHORT.get(m, m) + (", signed" if signed else ""), (m, signed)))
        head, label_h = 18, 16
        fig = Image.new("RGB", (TILE * len(columns), head + len(results["images"]) * (TILE + label_h)), "white")
        draw = ImageDraw.Draw(fig)
        font = ImageFont.load_default()
        for c, (title, _) in enumerate(columns):
            draw.text((c * TILE + 4, 3), title, fill="black", font=font)
        for r, img in enumerate(results["images"]):
            y = head + r * (TILE + label_h)
            for c, (_, what) in enumerate(columns):
                if what is None:
                    path = img["image"]
                else:
                    entry = img["methods"][what[0]]
                    path = entry["signed"] if what[1] else entry["overlay"]
                with Image.open(report / path) as tile:
                    fig.paste(tile.convert("RGB").resize((TILE - 2, TILE - 2), Image.LANCZOS), (c * TILE + 1, y))
            top = img["predictions"][0]
            draw.text((4, y + TILE), f"{img['name']}: {top['name'].split(',')[0]} ({top['prob']:.2f})",
                      fill="black", font=font)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
        print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
