"""Worker memory and start-up with and without pre-fork: the PyTorch ResNet-18 sample as N CPU replicas.

For each mode, runs `inferpool run <images> --worker "<python> resnet18_torch.py" --devices cpu=N [--prefork]`
and samples, every 50 ms while it runs, the memory of every process below inferpool (the worker processes, the
loader and its forked replicas) as PSS: a page shared by k processes counts 1/k in each, so copy-on-write sharing
shows as what it saves. Reports the peak, the whole command's wall time (on the 20 sample images start-up is most of
it), and the ratios of pre-fork to one load per replica, measured in the same run.

    bash bench/python/prefork.sh [--replicas 4] [--rounds 3] [--images samples/images]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def descendants(pid):
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
                found.extend(children)
                pending.extend(children)
        except OSError:
            pass
    return found


def pss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(inferpool, images, replicas, prefork, python):
    out = tempfile.mkdtemp(prefix="inferpool-prefork-")
    worker = f"{python} {os.path.join(ROOT, 'samples', 'workers', 'python', 'resnet18_torch.py')}"
    command = [inferpool, "run", images, "--worker", worker, "--devices", f"cpu={replicas}", "-o", out, "-q"]
    if prefork:
        command.append("--prefork")
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, workers_seen = 0, 0
    while process.poll() is None:
        pids = descendants(process.pid)
        workers_seen = max(workers_seen, len(pids))
        peak = max(peak, sum(pss_bytes(p) for p in pids))
        time.sleep(0.05)
    wall = time.monotonic() - started
    stdout, stderr = process.communicate()
    shutil.rmtree(out, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(f"exit {process.returncode}: {stderr[-2000:]}")
    return {"prefork": prefork, "replicas": replicas, "wall_s": round(wall, 2), "peak_workers_pss_mb": round(peak / 2**20), "processes_seen": workers_seen}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inferpool", required=True)
    parser.add_argument("--images", default=os.path.join(ROOT, "samples", "images"))
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    python = sys.executable
    listing = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    with listing:  # the images only (the folder also holds SOURCES.md)
        for name in sorted(os.listdir(args.images)):
            if name.lower().endswith((".png", ".jpg", ".jpeg")):
                listing.write(os.path.abspath(os.path.join(args.images, name)) + "\n")
    print(f"machine: {os.cpu_count()} cores; {args.replicas} CPU replicas of the torch ResNet-18 sample over {args.images}")
    rows = []
    for round_ in range(args.rounds):
        for prefork in (False, True):  # alternated, so that drift on a shared machine hits both alike
            row = run(args.inferpool, listing.name, args.replicas, prefork, python)
            row["round"] = round_ + 1
            rows.append(row)
            print(f"round {row['round']}  {'pre-fork ' if prefork else 'one load each'}: wall {row['wall_s']:6.2f} s, "
                  f"peak worker memory {row['peak_workers_pss_mb']:5d} MB (PSS, {row['processes_seen']} processes)", flush=True)

    def best(prefork, key):
        return min(r[key] for r in rows if r["prefork"] == prefork)

    memory = best(True, "peak_workers_pss_mb") / best(False, "peak_workers_pss_mb")
    wall = best(True, "wall_s") / best(False, "wall_s")
    print(f"pre-fork ÷ one load each (best of {args.rounds}): memory {memory:.2f}×, wall time {wall:.2f}×")
    os.unlink(listing.name)
    if args.json:
        print(json.dumps({"rows": rows, "memory_ratio": round(memory, 3), "wall_ratio": round(wall, 3)}))


if __name__ == "__main__":
    main()
