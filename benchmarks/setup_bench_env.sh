#!/usr/bin/env bash
# Build the benchmark environment .bench-venv (torch 2.14.1 + torchvision 0.29.1, pytorch-grad-cam, Captum,
# interpretorch editable). It is separate from the development venv: pytorch-grad-cam needs torchvision,
# which does not import beside the development torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.bench-venv}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install grad-cam captum
"$VENV/bin/pip" install -e "$ROOT"
# the peers must not have replaced torch
"$VENV/bin/python" - <<'PY'
import torch, torchvision, pytorch_grad_cam, captum, interpretorch
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.29.1", torchvision.__version__
print("bench env ok: torch", torch.__version__, "torchvision", torchvision.__version__, "captum", captum.__version__)
PY
echo "run: $VENV/bin/python $ROOT/benchmarks/bench_cam.py"
