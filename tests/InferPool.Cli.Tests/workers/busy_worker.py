"""A worker that writes its pid to $BUSY_DIR/pid-<pid> when loaded, spawns a child of its own (as a DataLoader
would) whose pid goes to $BUSY_DIR/child-<pid>, and marks $BUSY_DIR/busy before it blocks forever in infer: for
the test that kills inferpool while a batch is in progress and expects no process left behind. The process
answering the batch writes $BUSY_DIR/served-<pid> (with pre-fork, a copy of the loader, not the loader)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inferpool_worker import serve  # noqa: E402

DIR = os.environ["BUSY_DIR"]
open(os.path.join(DIR, f"started-{os.getpid()}"), "w").close()  # every process InferPool started


def load(device):
    print("loading: this line goes to stderr, not to the protocol", flush=True)
    child = subprocess.Popen(["sleep", "3600"])
    open(os.path.join(DIR, f"child-{child.pid}"), "w").close()
    open(os.path.join(DIR, f"pid-{os.getpid()}"), "w").close()
    return child


def infer(model, batch):
    open(os.path.join(DIR, f"served-{os.getpid()}"), "w").close()  # a pre-forked replica is not the loader
    open(os.path.join(DIR, "busy"), "w").close()
    time.sleep(3600)


serve(load, infer, name="busy")
