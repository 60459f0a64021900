#!/usr/bin/env bash
# Build what the control function (custom.debian12, CPU) runs:
#   build/control-code/          the code package: funart_runtime and handlers
#   build/control-layer.zip      the FC layer: their Python dependencies under python/
# Publish the layer with `s cli fc3 layer publish --layer-name funart-runtime-python
# --code build/control-layer.zip --compatible-runtime custom.debian12`, then set
# FUNART_CONTROL_LAYER_ARN to the ARN it prints.
#
# Usage: layers/control/build.sh [PYTHON]
# PYTHON must be CPython 3.12 on x86_64 Linux, as on custom.debian12, because compiled
# dependencies are built for the interpreter that installs them. FUNART_LAYER_ANY_PYTHON=1
# skips that check for a local trial build.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${1:-python3}"
if [ "${FUNART_LAYER_ANY_PYTHON:-0}" != 1 ] && \
   ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  echo "layers/control/build.sh: $PYTHON is not Python 3.12; pass a 3.12 interpreter" \
       "(custom.debian12 runs 3.12), or set FUNART_LAYER_ANY_PYTHON=1 for a trial build" >&2
  exit 2
fi
INDEX="${PIP_INDEX_URL:-https://pypi.org/simple/}"
rm -rf build/control-code build/control-layer build/control-layer.zip
mkdir -p build/control-code build/control-layer/python

cp -a funart_runtime handlers build/control-code/
find build/control-code -name __pycache__ -prune -exec rm -rf {} +

# The dependencies of the runtime, without the project itself (it is the code package).
"$PYTHON" -m pip install --quiet --index-url "$INDEX" --target build/control-layer/python \
  "aiohttp>=3.9" "websocket-client>=1.7" "requests>=2.31" "oss2>=2.18" "pydantic>=2.5" \
  "alibabacloud-openapi-util>=0.2.2" "alibabacloud-fc20230330>=4.8"
(cd build/control-layer && "$PYTHON" -m zipfile -c ../control-layer.zip python)
echo "build/control-code and build/control-layer.zip are ready"
