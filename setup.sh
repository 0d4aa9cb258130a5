#!/usr/bin/env bash
# Creates ./.venv with everything jaxdiff needs (pinned).  `bash setup.sh --test` also
# installs the PyTorch extra used by the checkpoint converters and the parity tests.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if ! command -v uv >/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check uv==0.13.9
fi
UV="$(command -v uv || echo "$PY -m uv")"
[ -x .venv/bin/python ] || $UV venv -q -p "$PY" .venv
export VIRTUAL_ENV="$PWD/.venv"
$UV pip install -q -r requirements.txt
$UV pip install -q --no-deps -e .
if [ "${1:-}" = "--test" ]; then
  # Extra wheel directories on local disk avoid a multi-GB download: JAXDIFF_WHEEL_DIRS
  # (colon-separated; directories that do not exist are ignored).
  links=()
  IFS=: read -r -a dirs <<< "${JAXDIFF_WHEEL_DIRS:-}"
  for d in "${dirs[@]}"; do [ -n "$d" ] && [ -d "$d" ] && links+=(--find-links "$d"); done
  $UV pip install -q "${links[@]}" -r requirements-torch.txt
fi
