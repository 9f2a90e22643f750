"""A plain-Python worker for the CLI tests: for each input file, its size and first byte; misbehaves on command.

An input is a path, or a record with a "path" and optional "want": "record" (echo the record), "text"
(answer a string), "env" (the thread and CUDA variables it was started with), "stderr" (write a line to stderr),
"hang" (never answer). A file named *crash* kills the process (a real exit), *bad* fails that item.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inferpool_worker import serve  # noqa: E402


def one(item):
    record = item if isinstance(item, dict) else {"path": item}
    path = record["path"]
    name = os.path.basename(path)
    if "crash" in name:
        os._exit(3)
    if "bad" in name:
        raise ValueError(f"refusing {name}")
    want = record.get("want")
    if want == "record":
        return record
    if want == "env":
        return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "INFERPOOL_THREADS", "CUDA_DEVICE_ORDER", "CUDA_VISIBLE_DEVICES")}
    if want == "hang":
        time.sleep(3600)
    if want == "stderr":
        print(f"a note from the worker about {name}", file=sys.stderr, flush=True)
        return "noted"
    if want == "text":
        return f"a string for {name}"
    with open(path, "rb") as f:
        data = f.read()
    return [len(data), data[0] if data else -1]


serve(lambda device: None, lambda model, batch: [one(x) for x in batch], name="file-worker", max_batch=3)
