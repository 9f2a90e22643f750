"""The Python ways to run ResNet-18 over a folder of images, against `inferpool run --worker`, in one run.

    bash bench/python/compare.sh            # builds the CLI, finds a python3 with torch, runs this

Four ways, same images, same model code (samples/workers/python/resnet18_torch.py), each run as its own
fresh process and timed end to end as a user waits for it (interpreter start, torch import, model load,
decode, inference, results in hand), in alternating rounds:

  loop      the for-loop: one process, one image per call, torch's default threads
  mp-pool   the seed-style process pool: multiprocessing.Pool(N) with one model per process (loaded in the
            initializer), apply_async per image, then .get() on each future in order
  inferpool inferpool run LIST --worker "python3 resnet18_torch.py" with its defaults (replicas and threads
            per replica chosen for the cores, results in Parquet parts)
  inferpool --prefork  the same with --prefork: one process imports torch and loads the model, the replicas are
            forked from it (as the process pool forks its workers)

Prints img/s per way (median of the rounds) and the ratio to the loop; --json for machine-readable output.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SAMPLE = os.path.join(ROOT, "samples", "workers", "python")
sys.path.insert(0, SAMPLE)
sys.path.insert(0, HERE)
from inputs import copy_images  # noqa: E402

_model = None
sample = None


def _load_sample():
    global sample
    import resnet18_torch
    sample = resnet18_torch


def _init_worker():
    global _model
    _model = sample.load_model("cpu")


def _embed_one(path):
    return sample.embed(_model, [sample.decode(path)])[0]


def run_loop(paths):
    model = sample.load_model("cpu")
    return [sample.embed(model, [sample.decode(p)])[0] for p in paths]


def run_pool(paths, processes):
    with multiprocessing.Pool(processes, initializer=_init_worker) as pool:
        futures = [pool.apply_async(_embed_one, (p,)) for p in paths]
        return [f.get() for f in futures]


def run_way(way, list_file, processes):
    """One way in a fresh interpreter, as a user's script would run."""
    command = [sys.executable, os.path.abspath(__file__), "--way", way, "--list", list_file, "--processes", str(processes)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{way} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def run_inferpool(inferpool, list_file, output, extra):
    worker = f"{sys.executable} {os.path.join(SAMPLE, 'resnet18_torch.py')}"
    command = [inferpool, "run", list_file, "--worker", worker, "-o", output, "--force", "-q", *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"inferpool failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def main():
    parser = argparse.ArgumentParser(description="Python loop vs process pool vs inferpool --worker")
    parser.add_argument("--inferpool", help="path to the inferpool executable")
    parser.add_argument("--way", choices=["loop", "mp-pool"], help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--images", default=os.path.join(ROOT, "samples", "images"))
    parser.add_argument("--repeat", type=int, default=5, help="each image this many times (20 sample images)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="mp-pool processes")
    parser.add_argument("--inferpool-args", default="", help="extra arguments for inferpool run, e.g. '--batch 8'")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.way:
        # Inside the timed child process: the import of torch counts, as in a user's script.
        _load_sample()
        with open(args.list) as f:
            paths = f.read().split()
        outputs = run_loop(paths) if args.way == "loop" else run_pool(paths, args.processes)
        assert len(outputs) == len(paths)
        return
    if not args.inferpool:
        parser.error("--inferpool is required")

    work = tempfile.mkdtemp(prefix="inferpool-compare-")
    try:
        paths, list_file = copy_images(args.images, args.repeat, work)

        ways = {
            "loop": lambda: run_way("loop", list_file, args.processes),
            "mp-pool": lambda: run_way("mp-pool", list_file, args.processes),
            "inferpool": lambda: run_inferpool(args.inferpool, list_file, os.path.join(work, "out"), args.inferpool_args.split()),
            # As the process pool does: import and load once, fork the workers.
            "inferpool --prefork": lambda: run_inferpool(args.inferpool, list_file, os.path.join(work, "out"), [*args.inferpool_args.split(), "--prefork"]),
        }
        seconds = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                started = time.perf_counter()
                way()
                seconds[name].append(time.perf_counter() - started)

        rates = {name: len(paths) / statistics.median(s) for name, s in seconds.items()}
        report = {
            "items": len(paths),
            "rounds": args.rounds,
            "cores": os.cpu_count(),
            "mp_pool_processes": args.processes,
            "img_per_s": rates,
            "ratio_to_loop": {name: rate / rates["loop"] for name, rate in rates.items()},
        }
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(f"{len(paths)} images, {args.rounds} rounds (median), {os.cpu_count()} cores, mp-pool processes {args.processes}; "
              f"each way a fresh process, timed from its start to all results in hand")
        print(f"{'way':<20} {'img/s':>8} {'x loop':>7}")
        for name, rate in rates.items():
            print(f"{name:<20} {rate:8.1f} {rate / rates['loop']:7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
