"""A worker written from docs/worker-protocol.md alone (no helper) that prints to stdout like real libraries do:
a banner before its hello and a progress line before each result. Answers each input with its length."""
import json
import sys

print("Loading weights... done", flush=True)
print(json.dumps({"type": "hello", "protocol": 1, "name": "noisy"}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["type"] == "shutdown":
        break
    print(f"step {request['id']}: {len(request['items'])} item(s)", flush=True)
    results = [{"ok": True, "output": [len(str(item["input"]))]} for item in request["items"]]
    print(json.dumps({"type": "result", "id": request["id"], "results": results}), flush=True)
