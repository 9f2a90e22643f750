#!/usr/bin/env bash
# A warm cluster on this one machine against a local run of the same job, alternating, in one run.
# Usage: bash bench/cluster/vs-local.sh [nodes 2] [copies 10] [rounds 3]
# Each node gets one CPU replica with one thread; the local run gets as many (cpu=N --threads 1), so both use the
# same cores. Needs PostgreSQL's server binaries (Debian: apt-get install postgresql); a throwaway server is
# started in a temporary folder and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
nodes=${1:-2}; copies=${2:-10}; rounds=${3:-3}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "No PostgreSQL server binaries: apt-get install postgresql" >&2; exit 2; }
dotnet build src/InferPool.Cli -c Release -v quiet -nologo >/dev/null
cli=src/InferPool.Cli/bin/Release/net10.0/inferpool
dir=$(mktemp -d); chmod 755 "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as=(); if [ "$(id -u)" = 0 ]; then mkdir "$dir/pg"; chown postgres "$dir/pg"; as=(runuser -u postgres --); else mkdir "$dir/pg"; fi
"${as[@]}" "$bin/initdb" -D "$dir/pg/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
"${as[@]}" "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w start -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1" >/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; "${as[@]}" "$bin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"${as[@]}" "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE bench" >/dev/null
conn="Host=127.0.0.1;Port=$port;Username=postgres;Database=bench"

for c in $(seq 1 "$copies"); do mkdir -p "$dir/in/c$c"; cp samples/images/*.png samples/images/*.jpg "$dir/in/c$c/"; done
items=$(find "$dir/in" -type f | wc -l)
for n in $(seq 1 "$nodes"); do
  "$cli" node --cluster "$conn" --name "n$n" --devices cpu=1 --threads 1 --advertise 127.0.0.1 \
    --silo-port $((21110 + n)) --gateway-port $((31110 + n)) --fast-failure-detection >"$dir/node$n.log" 2>&1 &
  pids+=($!)
done
# Warm: the nodes join and load the model on a first small job (not timed).
"$cli" run "$dir/in/c1" --cluster "$conn" --shard-size 5 --job warm -q >/dev/null
echo "$items images, $nodes node(s) × 1 CPU replica × 1 thread vs a local run with cpu=$nodes --threads 1; $(nproc) cores; shards of 20"
best_local=0; best_cluster=0
for r in $(seq 1 "$rounds"); do
  t0=$(date +%s.%N); "$cli" run "$dir/in" -o "$dir/out-$r" --devices "cpu=$nodes" --threads 1 -q >/dev/null || true; t1=$(date +%s.%N)
  "$cli" run "$dir/in" --cluster "$conn" --shard-size 20 --job "round-$r" -q >/dev/null; t2=$(date +%s.%N)
  local_rate=$(python3 -c "print(round($items/($t1-$t0),1))"); cluster_rate=$(python3 -c "print(round($items/($t2-$t1),1))")
  echo "round $r: local $local_rate img/s, cluster $cluster_rate img/s, cluster ÷ local $(python3 -c "print(round($cluster_rate/$local_rate,2))")"
  best_local=$(python3 -c "print(max($best_local,$local_rate))"); best_cluster=$(python3 -c "print(max($best_cluster,$cluster_rate))")
done
echo "best of $rounds: local $best_local img/s, cluster $best_cluster img/s: cluster ÷ local $(python3 -c "print(round($best_cluster/$best_local,2))")"
