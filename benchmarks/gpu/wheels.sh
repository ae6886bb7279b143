#!/usr/bin/env bash
# Download, here (with a network), the wheels the lent GPU machine lacks, for its platform (Python
# 3.12, x86-64 manylinux), into .whl-gpu/ (git-ignored), which the device call carries and
# benchmarks/gpu/run.sh installs. The machine (docs/gpu.md) has torch 2.11, transformers 5.17,
# huggingface_hub 1.33, tokenizers 0.23.2, accelerate 1.15, pyarrow, and no datasets or webdataset.
#
#   benchmarks/gpu/wheels.sh            # then: device run with carry [".whl-gpu"]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
# transformers 5.24: the newest that runs on huggingface_hub 1.x (5.25 needs 2.4 and `kernels`);
# our floor is 5.23 (pyproject). regex: transformers asks for >= 2025.10.22.
WHEELS=(transformers==5.24.0 regex==2026.11.19 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 webdataset==1.0.2 braceexpand==0.1.7)
rm -rf .whl-gpu && mkdir -p .whl-gpu
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl-gpu "${WHEELS[@]}"
size=$(du -sm .whl-gpu | cut -f1)
echo "$(ls .whl-gpu | wc -l) wheels, ${size} MiB in .whl-gpu/"
if [ "$size" -gt 40 ]; then echo "wheels.sh: ${size} MiB leaves too little of the device call's 64 MiB for the tree" >&2; exit 1; fi
