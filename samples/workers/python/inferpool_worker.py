"""InferPool worker helper (standard library only).

A worker script defines load(device) and infer(model, batch), then calls serve(load, infer).
infer returns one output per input (any JSON value); an output that is an exception fails that item
alone. If infer raises, the batch is retried one item at a time so only the bad items fail.
InferPool starts one worker process per replica, pinned to its device through the environment
(CUDA_VISIBLE_DEVICES, INFERPOOL_DEVICE, INFERPOOL_REPLICA), and talks to it over stdin/stdout
with the line protocol in docs/worker-protocol.md.

Importing this module moves the protocol to a private copy of stdout and points file descriptor 1 at stderr, so
print(), model loaders' banners and C libraries writing to stdout land in the log instead of breaking the
protocol. The worker also exits as soon as InferPool closes its stdin (InferPool exited or was killed), even in
the middle of infer().
"""
import json
import os
import select
import sys
import threading

PROTOCOL = 1


def _take_stdout():
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)  # fd 1 is now stderr: anything printed goes to the log
    return os.fdopen(private, "w", encoding="utf-8", buffering=1)


_protocol = _take_stdout()


def protocol_fd():
    """The file descriptor the protocol is written to (stdout as InferPool sees it)."""
    return _protocol.fileno()


def _send(message):
    _protocol.write(json.dumps(message, separators=(",", ":")) + "\n")
    _protocol.flush()


def _exit_when_stdin_closes():
    """Polls stdin for hang-up without reading it: the main loop owns the data, this thread only watches."""
    poller = select.poll()
    poller.register(sys.stdin.fileno(), select.POLLHUP | select.POLLERR)
    while True:
        for _, events in poller.poll(500):
            if events & (select.POLLHUP | select.POLLERR):
                os._exit(0)


def _out_of_memory(exc):
    """torch.cuda.OutOfMemoryError (and anything else that says so): InferPool halves the batch instead."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _sticky_device_error(exc):
    """A CUDA error that leaves the context unusable: only a new process recovers."""
    text = str(exc).lower()
    return "illegal memory access" in text or "device-side assert" in text or "cuda error: unspecified launch failure" in text


def _free_device_memory():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _error(exc):
    return {"ok": False, "error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__}


def serve(load, infer, name=None, max_batch=0):
    """Loads the model for this replica's device and answers batches until shutdown or end of input."""
    threading.Thread(target=_exit_when_stdin_closes, name="inferpool-stdin-watch", daemon=True).start()
    device = os.environ.get("INFERPOOL_DEVICE", "cpu")
    model = load(device)
    _send({"type": "hello", "protocol": PROTOCOL, "name": name or os.path.basename(sys.argv[0]), "max_batch": max_batch})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("type") == "shutdown":
            break
        inputs = [item["input"] for item in request["items"]]
        try:
            outputs = infer(model, inputs)
            if len(outputs) != len(inputs):
                raise ValueError(f"infer returned {len(outputs)} outputs for {len(inputs)} inputs")
            results = [_error(o) if isinstance(o, BaseException) else {"ok": True, "output": o} for o in outputs]
        except Exception as exc:  # the batch failed
            if _out_of_memory(exc):
                # Not retried item by item here: that would hide it, and every later batch would run out again.
                # InferPool halves this replica's batch and sends the pieces; an item too large alone rebuilds it.
                _free_device_memory()
                _send({"type": "error", "id": request["id"], "error_type": "OutOfMemoryError", "error": str(exc)})
                continue
            if _sticky_device_error(exc):
                print(f"inferpool_worker: {type(exc).__name__}: {exc}; exiting so that InferPool starts a new worker", file=sys.stderr, flush=True)
                os._exit(70)
            results = []  # find which items fail, one by one
            for single in inputs:
                try:
                    output = infer(model, [single])[0]
                    results.append(_error(output) if isinstance(output, BaseException) else {"ok": True, "output": output})
                except Exception as exc:
                    results.append(_error(exc))
        _send({"type": "result", "id": request["id"], "results": results})
