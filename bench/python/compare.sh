#!/usr/bin/env bash
# Python for-loop vs multiprocessing.Pool vs `inferpool run --worker` on the PyTorch ResNet-18 sample.
# Usage: bash bench/python/compare.sh [compare.py options, e.g. --repeat 10 --rounds 3 --json]
set -euo pipefail
cd "$(dirname "$0")/../.."

source bench/python/find_python.sh

dotnet build src/InferPool.Cli -c Release -v quiet -nologo | grep -E "error|warn" && exit 1 || true
exec "$python" bench/python/compare.py --inferpool src/InferPool.Cli/bin/Release/net10.0/inferpool "$@"
