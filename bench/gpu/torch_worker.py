"""The PyTorch ResNet-18 sample with knobs for the GPU check: a slow replica, and device memory held on purpose.

    python3 bench/gpu/torch_worker.py [--slow cuda:0#1=0.2] [--hold-gib 8] [--oom-above 4]

--slow REPLICA=SECONDS   the replica InferPool names REPLICA (INFERPOOL_REPLICA, e.g. cuda:0#1) sleeps that long per
                         batch, so a pull-based pool should hand it fewer batches than its faster sibling.
--hold-gib G             after loading, each replica allocates G GiB on its GPU and keeps it: a large model made to
                         order, so a memory cap can be shown on a card of any size.
--oom-above N            after loading, the replica measures what a batch of N images takes on the GPU and allocates
                         all the rest of the card but a margin, so a batch of about twice N or more runs out of device
                         memory for real (torch.cuda.OutOfMemoryError), and InferPool must halve its batches.

Everything else is samples/workers/python/resnet18_torch.py, unchanged.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "samples", "workers", "python"))
import resnet18_torch as sample  # noqa: E402
from inferpool_worker import serve  # noqa: E402


def held_for_oom(loaded, items):
    """Leaves free only about 1.5 times what a batch of `items` needs; returns the tensor that holds the rest."""
    import numpy as np
    import torch

    zeros = [np.zeros((3, 224, 224), dtype=np.float32)] * items
    sample.embed(loaded, zeros)  # cuDNN picks its kernels for this shape with the card still free
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    sample.embed(loaded, zeros)
    need = torch.cuda.max_memory_allocated() - base
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    keep = int(need * 1.5) + (16 << 20)
    print(f"oom-above {items}: a batch of {items} takes {need / 2**20:.0f} MiB; holding {(free - keep) / 2**30:.1f} GiB, "
          f"leaving {keep / 2**20:.0f} MiB free", file=sys.stderr, flush=True)
    return torch.empty(max(0, free - keep), dtype=torch.uint8, device="cuda:0")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.environ.get("INFERPOOL_WEIGHTS"))
    parser.add_argument("--slow", action="append", default=[], metavar="REPLICA=SECONDS")
    parser.add_argument("--hold-gib", type=float, default=0)
    parser.add_argument("--oom-above", type=int, default=0)
    args = parser.parse_args()
    threads = int(os.environ.get("INFERPOOL_THREADS", "0")) or None
    decoders = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1)
    replica = os.environ.get("INFERPOOL_REPLICA", "")
    delay = sum(float(s.split("=", 1)[1]) for s in args.slow if s.split("=", 1)[0] == replica)

    def load(device):
        loaded = sample.load_model(device, args.weights, threads)
        held = []
        if device.startswith("cuda"):
            import torch

            if args.hold_gib:
                held.append(torch.empty(int(args.hold_gib * 2**30), dtype=torch.uint8, device="cuda:0"))
            if args.oom_above:
                held.append(held_for_oom(loaded, args.oom_above))
        return loaded, held

    def infer(state, items):
        if delay:
            time.sleep(delay)
        prepared = list(decoders.map(sample._try_decode, items))
        good = [p for p in prepared if not isinstance(p, BaseException)]
        outputs = iter(sample.embed(state[0], good) if good else [])
        return [p if isinstance(p, BaseException) else next(outputs) for p in prepared]

    serve(load, infer, name="resnet18-torch-check")


if __name__ == "__main__":
    main()
