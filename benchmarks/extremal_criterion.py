"""Fong et al. 2019's criterion on the sample photos: the smallest area whose preserved region keeps the clean logit.

    .venv/bin/python benchmarks/extremal_criterion.py [THREADS] [chelsea,coffee,astronaut,rocket]

Extremal Perturbation (preserve) at the paper's settings (800 iterations, lr 0.01) for areas 0.05 / 0.1 / 0.2 /
0.4 on EfficientNet-Lite0, all images and areas optimised together; prints each mask's target logit and area.
"""
import sys, time, torch
from interpretorch.models import load_model
from interpretorch.data.samples import sample_images
from interpretorch.attribution.masks import extremal_perturbation
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["chelsea"]
lm = load_model("efficientnet_lite0")
model, pre = lm.model, lm.preprocess
imgs = dict(sample_images())
x = pre([imgs[n] for n in names])
areas = (0.05, 0.1, 0.2, 0.4)
t = time.perf_counter()
e = extremal_perturbation(model, x, "top1", areas=areas, iterations=800, lr=0.01)
print(f"{time.perf_counter() - t:.0f} s wall for {len(names)} image(s) x {len(areas)} areas x 800 iterations")
for i, n in enumerate(names):
    clean = float(e.extras["clean_scores"][i])
    row = [f"a={a}: logit {float(e.extras['mask_scores'][i, j]):.2f} (area {float(e.extras['mask_area'][i, j]):.3f})"
           for j, a in enumerate(areas)]
    ok = [a for j, a in enumerate(areas) if float(e.extras["mask_scores"][i, j]) >= clean]
    print(f"{n}: class {int(e.target[i])}, clean logit {clean:.2f}; " + "; ".join(row)
          + f"; smallest area keeping the clean logit: {min(ok) if ok else 'none of these'}")
