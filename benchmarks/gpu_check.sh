#!/usr/bin/env bash
# Issue 15's GPU figures in one run, from the repository root:
#     bash benchmarks/gpu_check.sh            # on the GPU machine (8 minutes at most)
#     bash benchmarks/gpu_check.sh --tiny     # CPU smoke run at toy sizes (this script works)
# Outputs go to $OUT (else bench-out/); see benchmarks/gpu_check.py for the parts.
#
# The GPU machine gets this working tree and has NO internet. Python is, in this order:
# $PYTHON; .venv/bin/python where it imports the project's requirements (and sees a GPU, unless
# --tiny); else a venv .venv-gpu over the machine's own Python (--system-site-packages: its CUDA
# torch is kept), with what is missing of requirements.txt (torch left out) installed with
# `pip --no-index` from wheels in $WHEELS (default shared/wheels; MONAI among them, fetched
# beforehand with `pip download -d shared/wheels -r requirements.txt` on a connected machine).
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=0
for a in "$@"; do [[ $a == --tiny ]] && tiny=1; done

works() {  # $1: python; the project's imports, and a GPU unless --tiny
  "$1" - "$tiny" <<'PY' >/dev/null 2>&1
import sys
import monai, numpy, pandas, SimpleITK, sklearn, yaml, rich, matplotlib, torch  # noqa: F401
sys.exit(0 if sys.argv[1] == "1" or torch.cuda.is_available() else 1)
PY
}

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  for cand in .venv/bin/python .venv-gpu/bin/python; do
    if [[ -x $cand ]] && works "$cand"; then PY=$cand; break; fi
  done
fi
if [[ -z $PY ]]; then
  base=$(command -v python3)
  echo "no ready Python: making .venv-gpu over $base (its torch kept), wheels from ${WHEELS:-shared/wheels}"
  [[ -x .venv-gpu/bin/python ]] || "$base" -m venv --system-site-packages .venv-gpu
  grep -v -E '^(torch|#|$)' requirements.txt > .venv-gpu/requirements-no-torch.txt
  .venv-gpu/bin/python -m pip install --no-index --find-links "${WHEELS:-shared/wheels}" \
    -r .venv-gpu/requirements-no-torch.txt
  PY=.venv-gpu/bin/python
  works "$PY" || { echo "the venv does not import the requirements or sees no GPU" >&2; exit 1; }
fi
echo "python: $PY"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" benchmarks/gpu_check.py "$@"
