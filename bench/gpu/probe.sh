#!/usr/bin/env bash
# Checks InferPool's GPU discovery (NVML) on a machine with NVIDIA GPUs and no .NET.
# Here:   bash bench/gpu/probe.sh publish      -> bench/gpu/out/DeviceProbe (self-contained, trimmed)
# There:  bash bench/gpu/probe.sh run          -> prints what discovery sees, next to nvidia-smi's view
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-run}" in
  publish)
    dotnet publish DeviceProbe -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true -p:PublishSingleFile=true -o out
    ;;
  run)
    ./out/DeviceProbe
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv
    fi
    ;;
esac
