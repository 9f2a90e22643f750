"""The PyTorch ResNet-18 sample on one device: the plain loop vs `inferpool run --worker` at 1, 2, 4, 8 replicas.

Run through bench/gpu/check.sh. For each configuration it prints the steady-state img/s (start-up reported
apart: the plain loop loads its model and runs a batch before its clock starts; an inferpool configuration runs
n and 2n images and takes the difference), the ratio to the plain loop (batch 1), the peak device memory in use
above the baseline before it (nvidia-smi, sampled every 0.2 s; the plain loop's cache is emptied after it), and
from inferpool's summary the workers' memory and any capped or removed replicas. Each row is printed, and the
--json file rewritten, as soon as it is measured; a configuration that fails is reported and the others still run.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SAMPLE = os.path.join(ROOT, "samples", "workers", "python")
sys.path.insert(0, SAMPLE)
sys.path.insert(0, os.path.join(ROOT, "bench", "python"))
from inputs import copy_images  # noqa: E402
import resnet18_torch as sample  # noqa: E402
import torch  # noqa: E402


class GpuMemory:
    """Peak memory.used of one GPU while the block runs (nvidia-smi; None without it)."""

    def __init__(self, index):
        self.index, self.peak, self._stop = index, None, threading.Event()

    def _used(self):
        out = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False)
        return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None

    def _sample(self):
        while not self._stop.wait(0.2):
            used = self._used()
            if used is not None:
                self.peak = max(self.peak or 0, used)

    def __enter__(self):
        if self.index is not None and shutil.which("nvidia-smi"):
            self.baseline = self._used()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        if getattr(self, "_thread", None):
            self._thread.join()


def free_device_memory():
    """Returns the plain loop's cached blocks to the driver, so the next configuration starts from the same baseline."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def plain_loop(paths, device, batch):
    """Returns (start-up seconds, steady seconds): the model is loaded and one batch run before the clock starts."""
    started = time.perf_counter()
    model = sample.load_model(device)
    sample.embed(model, [sample.decode(p) for p in paths[:batch]])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    startup = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(paths), batch):
        sample.embed(model, [sample.decode(p) for p in paths[start:start + batch]])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    del model
    free_device_memory()
    return startup, seconds, ""


def inferpool(binary, list_file, output, device, replicas, batch, start_timeout):
    """One whole `inferpool run --worker`: wall seconds, and what its summary says about memory, caps and removals."""
    worker = f"{sys.executable} {os.path.join(SAMPLE, 'resnet18_torch.py')}"
    command = [binary, "run", list_file, "--worker", worker, "--devices", f"{device}={replicas}", "--batch", str(batch),
               "-o", output, "--force", "--start-timeout", str(start_timeout), "-q"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"inferpool failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    memory = re.search(r"Resident memory per replica: (.*?) \(", done.stdout)
    notes = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("Note:") or "removed" in line]
    return seconds, "; ".join(([memory.group(1)] if memory else []) + notes)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inferpool", required=True)
    parser.add_argument("--device", default="cuda:0", help="cuda:N or cpu")
    parser.add_argument("--replicas", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=32, help="the larger batch size tried beside 1")
    parser.add_argument("--repeat", type=int, default=10, help="each of the 20 sample images this many times")
    parser.add_argument("--start-timeout", type=int, default=600, help="seconds a worker may take to import torch and load (a cold start on a busy machine is slow)")
    parser.add_argument("--json", help="also write the results to this file, rewritten after every row")
    args = parser.parse_args()

    gpu = int(args.device.split(":")[1]) if args.device.startswith("cuda") else None
    work = tempfile.mkdtemp(prefix="inferpool-gpu-check-")
    try:
        # Two inputs, n and 2n images: a run's start-up (.NET, torch imports, CUDA contexts, cuDNN set-up) is the
        # same in both, so n / (t(2n) - t(n)) is the steady rate and t(n) - n / rate the start-up.
        paths, single = copy_images(os.path.join(ROOT, "samples", "images"), args.repeat, os.path.join(work, "n"))
        double_paths, double = copy_images(os.path.join(ROOT, "samples", "images"), 2 * args.repeat, os.path.join(work, "2n"))

        if gpu is not None:
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(gpu))  # the loop, like a worker, sees one GPU as cuda:0
        rows = []

        def record(row):
            rows.append(row)
            base = next((r["img_per_s"] for r in rows if r.get("img_per_s")), None)
            if "error" in row:
                print(f"{row['config']:<44} failed: {row['error']}", flush=True)
            else:
                ratio = f"x{row['img_per_s'] / base:5.2f}" if base else "     "
                peak = row["peak_gpu_mib_over_baseline"]
                print(f"{row['config']:<44} {row['img_per_s']:8.1f} img/s steady  {ratio}  start-up {row['startup_s']:5.1f} s  "
                      f"GPU +{peak if peak is not None else '-'} MiB  {row['detail']}", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=2)

        def measure(name, run):
            try:
                with GpuMemory(gpu) as memory:
                    startup, seconds, detail = run()
                peak = memory.peak - memory.baseline if memory.peak is not None and getattr(memory, "baseline", None) is not None else None
                record({"config": name, "items": len(paths), "img_per_s": round(len(paths) / seconds, 1), "startup_s": round(startup, 1),
                        "peak_gpu_mib_over_baseline": peak, "detail": detail})
            except Exception as exc:  # one failed configuration must not lose the others
                record({"config": name, "error": f"{type(exc).__name__}: {exc}"[-2000:]})

        def whole_runs(replicas, batch):
            out = os.path.join(work, "out")
            t_n, _ = inferpool(args.inferpool, single, out, args.device, replicas, batch, args.start_timeout)
            t_2n, detail = inferpool(args.inferpool, double, out, args.device, replicas, batch, args.start_timeout)
            steady = max(t_2n - t_n, 1e-6)
            return t_n - steady, steady, detail

        print(f"{len(paths)} and {len(double_paths)} images on {args.device}; torch {torch.__version__}, "
              f"cuda available: {torch.cuda.is_available()}", flush=True)
        measure("plain loop, batch 1", lambda: plain_loop(paths, args.device, 1))
        measure(f"plain loop, batch {args.batch}", lambda: plain_loop(paths, args.device, args.batch))
        for replicas in [int(r) for r in args.replicas.split(",")]:
            for batch in (1, args.batch):
                measure(f"inferpool --worker, {replicas} replica(s), batch {batch}", lambda: whole_runs(replicas, batch))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
