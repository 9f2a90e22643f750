"""A plain-Python worker for the tests: doubles numbers, and misbehaves on command."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inferpool_worker import serve  # noqa: E402


def _protocol_fd():
    import inferpool_worker
    return inferpool_worker.protocol_fd()


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the helper recognises by name."""


def load(device):
    return {"loaded_by": os.getpid(), "device": device}


def _where():
    """Read when a batch is answered, not at load: a pre-forked replica loaded in another process."""
    return {
        "replica": os.environ["INFERPOOL_REPLICA"],
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }


def infer(model, batch):
    if "fits-two" in batch and len(batch) > 2:
        raise OutOfMemoryError(f"CUDA out of memory (simulated): a batch of {len(batch)} does not fit")
    outputs = []
    for x in batch:
        if x == "crash":
            os._exit(3)  # a real process death, not an exception
        if x == "hang":
            time.sleep(3600)
        if x == "garbage":
            # Stray output on the protocol channel itself (the helper keeps print() off it): noise to skip.
            os.write(_protocol_fd(), b"Loading weights... done\n")
        if x == "broken":
            os.write(_protocol_fd(), b'{"type": "result", oops\n')
        if x == "bad":
            raise ValueError("bad input")
        outputs.append({"double": x * 2 if isinstance(x, (int, float)) else None, **model, **_where()})
    return outputs


serve(load, infer, name="test-worker")
