#!/usr/bin/env bash
# The PyTorch ResNet-18 worker sample on a GPU: plain loop vs `inferpool run --worker` at 1, 2, 4, 8 replicas,
# batch 1 and 32, with img/s and peak GPU memory per configuration.
#
# Here (has .NET):     bash bench/gpu/check.sh publish     -> bench/gpu/out/inferpool-cli.tar.gz (self-contained,
#                                                              trimmed, no built-in ONNX model: ~42 MB, under the carry limit)
# There (no .NET):     bash bench/gpu/check.sh run [check.py options]    e.g. --device cuda:0 --repeat 10 --json $OUT/gpu.json
# Without a GPU:       bash bench/gpu/check.sh run --device cpu --replicas 1,2 --batch 4 --repeat 1
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/gpu/out
case "${1:-run}" in
  publish)
    rm -rf "$out/cli"
    dotnet publish src/InferPool.Cli -c Release -r linux-x64 --self-contained \
      -p:PublishTrimmed=true -p:PublishReadyToRun=false -p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true -p:InferPoolBundleModel=false -o "$out/cli" -v quiet -nologo
    tar -C "$out" -czf "$out/inferpool-cli.tar.gz" cli
    du -h "$out/inferpool-cli.tar.gz"
    ;;
  run)
    shift || true
    if [ ! -x "$out/cli/inferpool" ]; then
      tar -C "$out" -xzf "$out/inferpool-cli.tar.gz"
    fi
    source bench/python/find_python.sh
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv
    fi
    "$out/cli/inferpool" devices || true
    exec "$python" bench/gpu/check.py --inferpool "$out/cli/inferpool" "$@"
    ;;
  *)
    echo "usage: bash bench/gpu/check.sh publish | run [--device cuda:0] [--replicas 1,2,4,8] [--batch 32] [--repeat 10] [--json FILE]" >&2
    exit 2
    ;;
esac
