#!/usr/bin/env bash
# The whole GPU session in one command: install what the machine lacks from the carried wheels,
# then the four steps (CUDA tests, throughput, data-bound, digits-seg), each under its own budget.
# See docs/gpu.md.
#
#   benchmarks/gpu/run.sh [--dry-run] [--step tests,throughput,data,segmentation] [--out DIR] [--budget SECONDS] [--commit SHA]
#
# --dry-run: every step on the CPU with tiny sizes (what the test suite runs); installs nothing.
# Wheels: benchmarks/gpu/wheels.sh (run beforehand, where there is a network) fills .whl-gpu/;
# here they are installed with pip --target into a private folder put first on PYTHONPATH, so the
# machine's own packages are left as they are.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
dry_run=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry_run=1; done
if [ "$dry_run" = 0 ] && compgen -G ".whl-gpu/*.whl" >/dev/null; then
    site=${MIM_GPU_SITE:-/tmp/mim-gpu-site}
    echo "installing $(ls .whl-gpu/*.whl | wc -l) carried wheels into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl-gpu/*.whl \
        || { echo "run.sh: installing the carried wheels failed" >&2; exit 3; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # datasets that is there but does not import (e.g. an older pyarrow on the machine) would break
    # transformers' Trainer, which imports it whenever it is found: then it is better not there
    if ! "$PYTHON" -c "import datasets" 2>/dev/null; then
        echo "run.sh: the carried datasets does not import here; removed (the GPU steps do not need it)"
        rm -rf "$site"/datasets "$site"/datasets-*.dist-info
    fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" -c "import transformers, torch; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" \
    || { echo "run.sh: torch or transformers does not import" >&2; exit 3; }
exec "$PYTHON" benchmarks/gpu/session.py "$@"
