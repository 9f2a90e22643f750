"""InferPool worker helper (standard library only).

A worker script defines load(device) and infer(model, batch), then calls serve(load, infer).
infer returns one output per input (any JSON value); an output that is an exception fails that item
alone. If infer raises, the batch is retried one item at a time so only the bad items fail.
InferPool starts one worker process per replica, pinned to its device through the environment
(CUDA_VISIBLE_DEVICES, INFERPOOL_DEVICE, INFERPOOL_REPLICA), and talks to it over stdin/stdout
with the line protocol in docs/worker-protocol.md. Print diagnostics to stderr, never stdout.
"""
import json
import os
import sys

PROTOCOL = 1


def _send(message):
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _error(exc):
    return {"ok": False, "error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__}


def serve(load, infer, name=None, max_batch=0):
    """Loads the model for this replica's device and answers batches until shutdown or end of input."""
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
        except Exception:  # the batch failed: find which items fail, one by one
            results = []
            for single in inputs:
                try:
                    output = infer(model, [single])[0]
                    results.append(_error(output) if isinstance(output, BaseException) else {"ok": True, "output": output})
                except Exception as exc:
                    results.append(_error(exc))
        _send({"type": "result", "id": request["id"], "results": results})
