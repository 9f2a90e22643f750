#!/usr/bin/env bash
# Worker memory and start-up with and without `--prefork`: the PyTorch ResNet-18 sample as CPU replicas.
# Usage: bash bench/python/prefork.sh [prefork.py options, e.g. --replicas 4 --rounds 3 --json]
set -euo pipefail
cd "$(dirname "$0")/../.."

source bench/python/find_python.sh

dotnet build src/InferPool.Cli -c Release -v quiet -nologo | grep -E "error|warn" && exit 1 || true
exec "$python" bench/python/prefork.py --inferpool src/InferPool.Cli/bin/Release/net10.0/inferpool "$@"
