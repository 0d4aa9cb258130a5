#!/usr/bin/env bash
# Creates ./.venv with everything jaxdiff needs, pinned in pyproject.toml (the one pin list):
# the package and its `test` extra; `bash setup.sh --test` also installs the `torch` extra
# used by the checkpoint converters and the parity tests.
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
if [ "${1:-}" != "--test" ]; then
  $UV pip install -q -e ".[test]"
else
  # Extra wheel directories on local disk avoid a multi-GB download: JAXDIFF_WHEEL_DIRS
  # (colon-separated; directories that do not exist are ignored).
  links=()
  IFS=: read -r -a dirs <<< "${JAXDIFF_WHEEL_DIRS:-}"
  for d in "${dirs[@]}"; do [ -n "$d" ] && [ -d "$d" ] && links+=(--find-links "$d"); done
  $UV pip install -q "${links[@]}" -e ".[test,torch]"
fi
