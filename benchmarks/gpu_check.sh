#!/usr/bin/env bash
# Issue 15's GPU figures in one run, from the repository root:
#     make gpu-wheels                          # here, once: MONAI and pydicom wheels into .whl/
#     bash benchmarks/gpu_check.sh             # on the GPU machine (8 minutes at most)
#     bash benchmarks/gpu_check.sh --tiny      # CPU smoke run at toy sizes (this script works)
# Outputs (a few text files) go to $OUT, else bench-out/; the synthetic cache and the training
# runs go to a scratch folder ($GPU_CHECK_SCRATCH, else a new one under /tmp).
#
# The GPU machine has no internet and its own Python with a CUDA build of torch. Python is, in
# this order: $PYTHON; .venv/bin/python where it imports what the check needs (and sees a GPU,
# unless --tiny); else python3 with the wheels of .whl/ (pure-Python MONAI and pydicom, which
# that machine lacks; carry .whl to it) installed without dependencies into /tmp/sarcograde-site.
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=0
for a in "$@"; do [[ $a == --tiny ]] && tiny=1; done

works() {  # $1: python; the check's imports, and a GPU unless --tiny
  "$1" - "$tiny" <<'PY' >/dev/null 2>&1
import sys
import monai, pydicom, numpy, pandas, scipy, sklearn, yaml, rich, matplotlib, jinja2, torch  # noqa: F401
sys.exit(0 if sys.argv[1] == "1" or torch.cuda.is_available() else 1)
PY
}

PY=${PYTHON:-}
if [[ -z $PY && -x .venv/bin/python ]] && works .venv/bin/python; then PY=.venv/bin/python; fi
if [[ -z $PY ]]; then
  PY=$(command -v python3)
  if ! works "$PY"; then
    site=/tmp/sarcograde-site
    shopt -s nullglob
    wheels=(.whl/*.whl)
    [[ ${#wheels[@]} -gt 0 ]] || { echo "$PY lacks the check's packages and .whl/ holds no wheel: run 'make gpu-wheels' and carry .whl" >&2; exit 1; }
    echo "installing ${wheels[*]} into $site for $PY"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    works "$PY" || { echo "$PY with $site still lacks a package of the check, or sees no GPU" >&2; exit 1; }
  fi
fi
echo "python: $PY"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" benchmarks/gpu_check.py "$@"
