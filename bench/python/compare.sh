#!/usr/bin/env bash
# Python for-loop vs multiprocessing.Pool vs `inferpool run --worker` on the PyTorch ResNet-18 sample.
# Usage: bash bench/python/compare.sh [compare.py options, e.g. --repeat 10 --rounds 3 --json]
set -euo pipefail
cd "$(dirname "$0")/../.."

python=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c "import torch, PIL, numpy" 2>/dev/null; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
  echo "No python3 with torch, Pillow and NumPy: apt-get install python3-torch python3-pil" >&2
  exit 2
fi

dotnet build src/InferPool.Cli -c Release -v quiet -nologo | grep -E "error|warn" && exit 1 || true
exec "$python" bench/python/compare.py --inferpool src/InferPool.Cli/bin/Release/net10.0/inferpool "$@"
