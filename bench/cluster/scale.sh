#!/usr/bin/env bash
# The cluster's control plane at scale: simulated nodes against the real store on a throwaway PostgreSQL.
# Usage: bash bench/cluster/scale.sh [--nodes 100] [--items 1000000] [--shard-size 100] [--work-ms 20] [--dim 16]
# Needs PostgreSQL's server binaries (Debian: apt-get install postgresql); runs initdb in a temporary folder, on a
# free loopback port, as the postgres user when run as root, and removes it all at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "No PostgreSQL server binaries: apt-get install postgresql" >&2; exit 2; }
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as=()
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; as=(runuser -u postgres --); fi
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300" >/dev/null
trap '"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null; rm -rf "$dir"' EXIT
"${as[@]}" "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE scale" >/dev/null
dotnet run -c Release --project bench/InferPool.Bench -- --cluster-scale --connection "Host=127.0.0.1;Port=$port;Username=postgres;Database=scale" "$@"
