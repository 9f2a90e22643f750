#!/usr/bin/env bash
# The 20-image default job as a new user runs it (`inferpool run`), N times (default 10) after one run that fills the
# model cache: the replicas' busy share and the whole command's wall time for each run, then the mean, the worst and how
# many runs were under the 50% target. Usage: bash bench/default-job.sh [N] [TOOL]
# TOOL: an inferpool to run (an installed tool package, say); the built CLI by default.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
tool=${2:-}
if [ -z "$tool" ]; then
  dotnet build src/InferPool.Cli -c Release -v quiet -nologo >/dev/null
  tool=src/InferPool.Cli/bin/Release/net10.0/inferpool
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$tool" run -o "$out/job" --force -q >/dev/null
echo "| run | replicas busy | whole command |"
echo "| ---: | ---: | ---: |"
for i in $(seq "$runs"); do
  start=$(date +%s.%N)
  summary=$("$tool" run -o "$out/job" --force)
  end=$(date +%s.%N)
  busy=$(grep -o 'busy [0-9]* %' <<<"$summary" | grep -o '[0-9]*')
  printf '| %d | %d%% | %.2f s |\n' "$i" "$busy" "$(echo "$end - $start" | bc)"
done | tee "$out/rows"
awk -F'|' '{gsub(/[% s]/, "", $3); gsub(/[ s]/, "", $4); b += $3; w += $4; n++; if (min == "" || $3 < min) min = $3; if ($3 < 50) low++}
  END {printf "mean busy %.1f%%, lowest %d%%, %d of %d runs under 50%%; mean whole command %.2f s\n", b / n, min, low, n, w / n}' "$out/rows"
