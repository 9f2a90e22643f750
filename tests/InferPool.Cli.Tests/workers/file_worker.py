"""A plain-Python worker for the CLI tests: for each input file, its size and first byte; misbehaves on command.

An input is a path, or a record with a "path" and optional "want": "record" (echo the record), "text"
(answer a string). A file named *crash* kills the process (a real exit), *bad* fails that item.
"""
import os
import sys

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
    if want == "text":
        return f"a string for {name}"
    with open(path, "rb") as f:
        data = f.read()
    return [len(data), data[0] if data else -1]


serve(lambda device: None, lambda model, batch: [one(x) for x in batch], name="file-worker", max_batch=3)
