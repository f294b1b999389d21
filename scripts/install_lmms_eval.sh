#!/usr/bin/env bash
# Install the `eval` extra (lmms-eval 0.7.3) into the active environment without replacing its torch, then
# check that lmms-eval's own registry finds the `visiondrop_llava` plugin.
#   bash scripts/install_lmms_eval.sh          (from the repository root, after `pip install torch` + `pip install -e .`)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
# pin the installed torch: lmms-eval would otherwise pull the newest (CUDA) torch, and torchvision must match it
"$PYTHON" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > "$constraints"
"$PYTHON" -m pip install -e ".[eval]" -c "$constraints"
# PyPI's torchvision is built against CUDA torch: beside a CPU-only torch it cannot load, and transformers (and
# so lmms-eval) then fail on import. Nothing here needs it: remove it when it cannot load.
if ! "$PYTHON" -c 'import torchvision' 2>/dev/null; then
    echo "torchvision cannot load beside torch $("$PYTHON" -c 'import torch; print(torch.__version__)'); uninstalling it"
    "$PYTHON" -m pip uninstall -y torchvision
fi
"$PYTHON" - <<'PY'
from lmms_eval.models import get_model
print("lmms-eval registry:", "visiondrop_llava ->", get_model("visiondrop_llava").__module__)
PY
