"""The PyTorch ResNet-18 sample on one device: the plain loop vs `inferpool run --worker` at 1, 2, 4, 8 replicas.

Run through bench/gpu/check.sh. For each configuration it prints img/s, the ratio to the plain loop
(batch 1), and the peak device memory in use during it (nvidia-smi, sampled every 0.2 s; on the CPU the
peak resident memory of the worker processes is in inferpool's own summary instead).
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


def plain_loop(paths, device, batch):
    model = sample.load_model(device)
    outputs = []
    for start in range(0, len(paths), batch):
        outputs += sample.embed(model, [sample.decode(p) for p in paths[start:start + batch]])
    return outputs


def inferpool(binary, list_file, output, device, replicas, batch):
    worker = f"{sys.executable} {os.path.join(SAMPLE, 'resnet18_torch.py')}"
    command = [binary, "run", list_file, "--worker", worker, "--devices", f"{device}={replicas}", "--batch", str(batch),
               "-o", output, "--force"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"inferpool failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    memory = re.search(r"Resident memory per replica: (.*?) \(", done.stdout)
    return memory.group(1) if memory else ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inferpool", required=True)
    parser.add_argument("--device", default="cuda:0", help="cuda:N or cpu")
    parser.add_argument("--replicas", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=32, help="the larger batch size tried beside 1")
    parser.add_argument("--repeat", type=int, default=10, help="each of the 20 sample images this many times")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    gpu = int(args.device.split(":")[1]) if args.device.startswith("cuda") else None
    work = tempfile.mkdtemp(prefix="inferpool-gpu-check-")
    try:
        paths, list_file = copy_images(os.path.join(ROOT, "samples", "images"), args.repeat, work)

        if gpu is not None:
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(gpu))  # the loop, like a worker, sees one GPU as cuda:0
        rows = []

        def measure(name, run):
            with GpuMemory(gpu) as memory:
                started = time.perf_counter()
                detail = run()
                seconds = time.perf_counter() - started
            row = {"config": name, "items": len(paths), "seconds": round(seconds, 2), "img_per_s": round(len(paths) / seconds, 1),
                   "peak_gpu_mib": memory.peak, "gpu_mib_before": getattr(memory, "baseline", None),
                   "replica_memory": detail if isinstance(detail, str) else ""}
            rows.append(row)
            base = rows[0]["img_per_s"]
            print(f"{name:<44} {row['img_per_s']:8.1f} img/s  x{row['img_per_s'] / base:5.2f}  "
                  f"peak GPU {row['peak_gpu_mib'] if row['peak_gpu_mib'] is not None else '-'} MiB  {row['replica_memory']}", flush=True)

        print(f"{len(paths)} images on {args.device}; torch {sample.torch.__version__}, "
              f"cuda available: {sample.torch.cuda.is_available()}", flush=True)
        measure("plain loop, batch 1", lambda: plain_loop(paths, args.device, 1))
        measure(f"plain loop, batch {args.batch}", lambda: plain_loop(paths, args.device, args.batch))
        for replicas in [int(r) for r in args.replicas.split(",")]:
            for batch in (1, args.batch):
                measure(f"inferpool --worker, {replicas} replica(s), batch {batch}",
                        lambda: inferpool(args.inferpool, list_file, os.path.join(work, "out"), args.device, replicas, batch))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
