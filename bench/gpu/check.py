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


WORKER = os.path.join(HERE, "torch_worker.py")  # the sample, plus the knobs the cap, out-of-memory and pull checks use


def inferpool(binary, list_file, output, device, replicas, batch, start_timeout, worker_args=(), extra=()):
    """One whole `inferpool run --worker`: wall seconds, a detail line from its summary, and its whole output."""
    worker = " ".join([sys.executable, WORKER, *worker_args])
    command = [binary, "run", list_file, "--worker", worker, "--devices", f"{device}={replicas}", "--batch", str(batch),
               "-o", output, "--force", "--start-timeout", str(start_timeout), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    text = done.stdout + "\n" + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"inferpool failed ({done.returncode}): {text.strip()[-2000:]}")
    return seconds, summary_detail(done.stdout), text


def summary_detail(stdout):
    """What the summary says about items, GPU utilisation and memory, workers' memory, caps and halvings."""
    parts = []
    done = re.search(r"Done: (\d+) items, (\d+) ok, (\d+) failed", stdout)
    if done:
        parts.append(f"{done.group(2)}/{done.group(1)} ok")
    gpu = re.search(r"mean utilisation (\d+)%, peak memory in use ([\d.]+) of ([\d.]+) GiB", stdout)
    if gpu:
        parts.append(f"util {gpu.group(1)}%, peak {gpu.group(2)}/{gpu.group(3)} GiB (inferpool)")
    memory = re.search(r"Resident memory per replica: (.*?) \(", stdout)
    if memory:
        parts.append(memory.group(1))
    parts += [line.strip() for line in stdout.splitlines() if line.strip().startswith("Note:") or "removed" in line]
    return "; ".join(parts)


def all_ok(stdout):
    done = re.search(r"Done: (\d+) items, (\d+) ok, (\d+) failed", stdout)
    return bool(done) and done.group(1) == done.group(2) and int(done.group(1)) > 0


def rows_per_replica(output):
    """Counts the output's rows by the replica that computed them (JSONL parts)."""
    counts = {}
    for name in sorted(os.listdir(output)):
        if name.endswith(".jsonl"):
            with open(os.path.join(output, name)) as f:
                for line in f:
                    replica = json.loads(line).get("replica") or "?"
                    counts[replica] = counts.get(replica, 0) + 1
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inferpool", required=True)
    parser.add_argument("--device", default="cuda:0", help="cuda:N or cpu")
    parser.add_argument("--replicas", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=32, help="the larger batch size tried beside 1")
    parser.add_argument("--repeat", type=int, default=10, help="each of the 20 sample images this many times")
    parser.add_argument("--start-timeout", type=int, default=600, help="seconds a worker may take to import torch and load (a cold start on a busy machine is slow)")
    parser.add_argument("--sweep-batches", help="batch sizes the sweep tries (default: 1 and --batch)")
    parser.add_argument("--sections", default="loops,sweep,cap,oom,pull",
                        help="what to run: loops (plain PyTorch), sweep (replicas x batches), cap (memory cap), oom (real out-of-memory), pull (unequal replicas)")
    parser.add_argument("--cap-replicas", type=int, default=3, help="cap: the headroom is set so that about this many of 8 replicas fit")
    parser.add_argument("--hold-gib", type=float, default=8, help="cap: GiB each replica holds on the GPU")
    parser.add_argument("--oom-above", type=int, default=4, help="oom: the card is filled so that a batch of about twice this runs out")
    parser.add_argument("--slow-seconds", type=float, default=0.2, help="pull: the slow replica's sleep per batch")
    parser.add_argument("--json", help="also write the results to this file, rewritten after every row")
    parser.add_argument("--logs", help="a folder for the whole output of the cap, oom and pull runs")
    args = parser.parse_args()
    sections = set(args.sections.split(","))

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
            elif "passed" in row:
                print(f"{row['config']:<44} {'PASSED' if row['passed'] else 'NOT SHOWN'}: {row['detail']}", flush=True)
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

        def check(name, run):
            """A yes/no check: run() returns (passed, detail, whole output); the output goes to --logs."""
            try:
                with GpuMemory(gpu) as memory:
                    passed, detail, text = run()
                peak = memory.peak - memory.baseline if memory.peak is not None and getattr(memory, "baseline", None) is not None else None
                record({"config": name, "passed": passed, "peak_gpu_mib_over_baseline": peak, "detail": detail})
                if args.logs:
                    os.makedirs(args.logs, exist_ok=True)
                    with open(os.path.join(args.logs, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".log"), "w") as f:
                        f.write(text)
            except Exception as exc:
                record({"config": name, "error": f"{type(exc).__name__}: {exc}"[-2000:]})

        def whole_runs(replicas, batch):
            out = os.path.join(work, "out")
            t_n, _, _ = inferpool(args.inferpool, single, out, args.device, replicas, batch, args.start_timeout, extra=["-q"])
            t_2n, detail, _ = inferpool(args.inferpool, double, out, args.device, replicas, batch, args.start_timeout, extra=["-q"])
            if t_2n <= t_n:
                raise RuntimeError(f"no steady rate: {t_2n:.1f} s over 2n images but {t_n:.1f} s over n (start-up varied more than n images take)")
            steady = t_2n - t_n
            return t_n - steady, steady, detail

        def memory_cap():
            # Each replica holds hold-gib GiB, so each costs about that much more than the model: keep free all but
            # room for cap-replicas of them (and half of one more), and the pool should start that many of 8.
            total = torch.cuda.mem_get_info()[1] / 2**30
            headroom = round(max(0.0, 1 - (args.cap_replicas + 0.5) * (args.hold_gib + 1) / total), 3)
            out = os.path.join(work, "cap")
            # Batch 1 over the 2n images, so the job outlasts the first two replicas' start-up (they are measured one
            # after the other, and only the second one's figure sets the cap).
            _, detail, text = inferpool(args.inferpool, double, out, args.device, 8, 1, args.start_timeout,
                                        worker_args=["--hold-gib", str(args.hold_gib)], extra=["--gpu-headroom", str(headroom), "--format", "jsonl"])
            capped = re.search(r"capped at (\d+) of 8 planned replicas", text)
            replicas = len(rows_per_replica_or_empty(out))
            started = int(capped.group(1)) if capped else 8
            passed = bool(capped) and all_ok(text) and 1 <= started < 8
            return passed, f"headroom {headroom} of {total:.0f} GiB, {args.hold_gib} GiB held per replica: " + \
                (f"capped at {started} of 8 ({replicas} replica(s) wrote rows); " if capped else "no cap logged; ") + detail, text

        def out_of_memory():
            out = os.path.join(work, "oom")
            _, detail, text = inferpool(args.inferpool, single, out, args.device, 1, args.batch, args.start_timeout,
                                        worker_args=["--oom-above", str(args.oom_above)], extra=["--format", "jsonl"])
            # Each halving is in the log (stderr) and in the summary's notes: count the notes only.
            halvings = re.findall(r"Note: Replica .* ran out of memory on a batch of (\d+); it now takes at most (\d+)", text)
            passed = bool(halvings) and all_ok(text)
            steps = ", ".join(f"{a}->{b}" for a, b in halvings) or "none"
            return passed, f"batch {args.batch}, filled to fit about {args.oom_above}: halvings {steps}; {detail}", text

        def pull():
            out = os.path.join(work, "pull")
            slow = f"{args.device}#0"
            _, detail, text = inferpool(args.inferpool, double, out, args.device, 2, 8, args.start_timeout,
                                        worker_args=["--slow", f"{slow}={args.slow_seconds}"], extra=["--format", "jsonl"])
            counts = rows_per_replica(out)
            fast = sum(n for r, n in counts.items() if r != slow)
            passed = all_ok(text) and fast > counts.get(slow, 0)
            each = ", ".join(f"{r}: {n} items" for r, n in sorted(counts.items()))
            return passed, f"2 replicas, batch 8, {slow} sleeps {args.slow_seconds} s per batch: {each}; {detail}", text

        print(f"{len(paths)} and {len(double_paths)} images on {args.device}; torch {torch.__version__}, "
              f"cuda available: {torch.cuda.is_available()}", flush=True)
        if "loops" in sections:
            measure("plain loop, batch 1", lambda: plain_loop(paths, args.device, 1))
            measure(f"plain loop, batch {args.batch}", lambda: plain_loop(paths, args.device, args.batch))
        if "sweep" in sections:
            # The first inferpool run on a fresh machine reads .NET's and torch's files cold; a throwaway run first
            # keeps that out of the n-image run of the first configuration (seen on the H200: t(2n) < t(n)).
            try:
                inferpool(args.inferpool, single, os.path.join(work, "warm"), args.device, 1, args.batch, args.start_timeout, extra=["-q"])
            except Exception as exc:  # reported by the configurations themselves
                print(f"warm-up run failed: {exc}", flush=True)
            for replicas in [int(r) for r in args.replicas.split(",")]:
                for batch in [int(b) for b in (args.sweep_batches or f"1,{args.batch}").split(",")]:
                    measure(f"inferpool --worker, {replicas} replica(s), batch {batch}", lambda: whole_runs(replicas, batch))
        if "cap" in sections:
            if gpu is None:
                record({"config": "memory cap", "error": "needs a GPU"})
            else:
                check("memory cap", memory_cap)
        if "oom" in sections:
            if gpu is None:
                record({"config": "out of memory", "error": "needs a GPU"})
            else:
                check("out of memory", out_of_memory)
        if "pull" in sections:
            check("pull scheduling", pull)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rows_per_replica_or_empty(output):
    try:
        return rows_per_replica(output)
    except OSError:
        return {}


if __name__ == "__main__":
    main()
