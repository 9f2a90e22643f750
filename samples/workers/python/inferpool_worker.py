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

Pre-fork mode (CPU only, Linux): serve(..., prefork=True), or INFERPOOL_PREFORK=1 in the environment (InferPool
sets it for WorkerOptions.Prefork and inferpool run --prefork). The first replica process to start forks a loader
that calls load("cpu") once; every replica process then hands its stdin and stdout to the loader, which forks a
copy of itself that serves that replica with the model already in memory. The weights are shared copy-on-write
instead of loaded once per replica, and replicas after the first start without loading anything. A forked
replica dies with the replica process InferPool started, and the loader exits once it has no replicas left.
PyTorch's OpenMP threads do not survive fork(), so the loader runs load() with torch held at one thread, and each
forked replica sets its own thread count (INFERPOOL_THREADS) afterwards. Never used on a GPU: CUDA cannot be
forked either, so on cuda:N the worker loads as usual.
"""
import hashlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback

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


def _leave():
    """Ends this worker at once. A worker InferPool started is in a process group its supervisor cleans up; a
    forked replica leads a group of its own and takes everything in it along (data-loader processes, say)."""
    if _forked:
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(0)


def _exit_when_stdin_closes():
    """Polls stdin for hang-up without reading it: the main loop owns the data, this thread only watches."""
    poller = select.poll()
    poller.register(0, select.POLLHUP | select.POLLERR)
    while True:
        for _, events in poller.poll(500):
            if events & (select.POLLHUP | select.POLLERR):
                _leave()


def _out_of_memory(exc):
    """torch.cuda.OutOfMemoryError (and cuBLAS/cuDNN allocation failures): InferPool halves the batch instead."""
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "status_alloc_failed" in text


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


def serve(load, infer, name=None, max_batch=0, prefork=None):
    """Loads the model for this replica's device and answers batches until shutdown or end of input.

    prefork: share one loaded model among the CPU replicas by forking (see the module's notes); None reads
    INFERPOOL_PREFORK from the environment.
    """
    threading.Thread(target=_exit_when_stdin_closes, name="inferpool-stdin-watch", daemon=True).start()
    device = os.environ.get("INFERPOOL_DEVICE", "cpu")
    hello = {"type": "hello", "protocol": PROTOCOL, "name": name or os.path.basename(sys.argv[0]), "max_batch": max_batch}
    if _prefork_wanted(prefork, device):
        _serve_through_loader(load, infer, hello)  # never returns
    model = load(device)
    _send(hello)
    _answer(model, infer, sys.stdin)


def _answer(model, infer, requests):
    """The protocol loop: one result (or a batch-level error) for each batch, until shutdown or end of input."""
    for line in requests:
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


# --- pre-fork mode ---------------------------------------------------------------------------------------------

_forked = False  # this process is a replica forked from the loader
_LOADER_IDLE_SECONDS = 2.0  # a loader with no replicas left waits this long for a restarted one, then exits
_ENDED_WITHOUT_WORD = 70  # as the waiter exits when its forked replica vanished without a word


def _prefork_wanted(prefork, device):
    if prefork is None:
        prefork = os.environ.get("INFERPOOL_PREFORK", "") not in ("", "0")
    if not prefork:
        return False
    reason = None
    if device != "cpu":
        reason = f"pre-fork is for CPU replicas only (CUDA cannot be forked); {device} loads its own model"
    elif not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        reason = "pre-fork needs Linux and Python 3.9 or later; loading this replica's own model"
    elif not os.environ.get("INFERPOOL_POOL"):
        reason = "pre-fork needs INFERPOOL_POOL, which InferPool sets; loading this replica's own model"
    if reason:
        print(f"inferpool_worker: {reason}", file=sys.stderr, flush=True)
        return False
    return True


def _loader_address():
    """An abstract Unix socket name (no file to clean up) shared by the replicas of one pool running this script."""
    identity = "\0".join([os.getcwd(), sys.executable, *sys.argv]).encode()
    return "\0inferpool-prefork-" + os.environ["INFERPOOL_POOL"][:40] + "-" + hashlib.sha256(identity).hexdigest()[:16]


def _serve_through_loader(load, infer, hello):
    """Hands this replica's stdin and stdout to a process forked from the loader, then waits for it to end: as a
    small interpreter of its own, so that this process's copy of the worker's imports (torch is over 100 MB of a
    process's own memory) does not stay resident for every replica."""
    connection = _connect_to_loader(_loader_address(), load, infer, hello)
    socket.send_fds(connection, [json.dumps(dict(os.environ)).encode()], [0, _protocol.fileno(), 2])
    if sys.executable:
        os.set_inheritable(connection.fileno(), True)  # _protocol is not: only the forked replica holds stdout now
        try:
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _WAITER, str(connection.fileno())])
        except OSError:
            pass  # wait here instead
    exec(_WAITER, {"__name__": "inferpool_waiter", "connection_fd": connection.detach()})


# What a replica process InferPool started runs once a forked replica serves it: it relays how that one ended
# (its exit code, or the loader's error) as its own, and by living holds the loader's connection open.
_WAITER = """
import json, os, socket, sys
fd = globals().get("connection_fd") or int(sys.argv[1])
connection = socket.socket(fileno=fd)
while True:
    data = connection.recv(65536)
    if not data:
        sys.stderr.write("inferpool_worker: the forked replica process ended without a word (killed or crashed)\\n")
        sys.stderr.flush()
        os._exit(70)
    message = json.loads(data)
    if "error" in message:
        sys.stderr.write("inferpool_worker: " + message["error"] + "\\n")
        sys.stderr.flush()
        os._exit(1)
    if "exit" in message:
        os._exit(message["exit"])
"""


def _connect_to_loader(address, load, infer, hello):
    """Connects to the pool's loader; the first replica to find none forks it."""
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect(address)
            return connection
        except (ConnectionRefusedError, FileNotFoundError):
            connection.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(address)
        except OSError:  # another replica is starting the loader: connect to it
            listener.close()
            time.sleep(0.05)
            continue
        listener.listen(64)
        if os.fork() == 0:
            _run_loader(listener, load, infer, hello)  # never returns
        listener.close()


def _run_loader(listener, load, infer, hello):
    """The loader: loads the model once, then forks one replica process for each replica that connects, and
    kills a forked replica as soon as the replica process it serves is gone (that one is what InferPool started,
    stops and kills); it does not rely on the forked process noticing by itself, which a stuck C call could stop."""
    code = 0
    try:
        os.setsid()  # not in the session of the replica that forked it: that one may be killed and restarted alone
        _protocol.close()  # that replica's stdout: InferPool must see it end when that replica does
        _point_at_devnull(0)
        failure = None
        try:
            model = _load_single_threaded(load)
        except BaseException:  # noqa: BLE001 - every replica that connects is told why
            failure = "load() failed in the pre-fork loader:\n" + traceback.format_exc()
            model = None
        # Its load() messages went to the first replica's stderr; from here on it says nothing, and it must not keep
        # that replica's stderr open (InferPool waits for the end of a stopped worker's stderr).
        _point_at_devnull(1)
        _point_at_devnull(2)
        replicas = {}  # connection -> pid of the forked replica serving it
        idle_since = time.monotonic()
        while True:
            ready, _, _ = select.select([listener, *replicas], [], [], 0.2)
            for ready_socket in ready:
                if ready_socket is listener:
                    connection, _ = listener.accept()
                    forked = _fork_replica(connection, [listener, *replicas], model, infer, hello, failure)
                    if forked:
                        replicas[connection] = forked
                    else:
                        connection.close()
                elif not _still_connected(ready_socket):
                    _kill_group(replicas[ready_socket])
            _reap(replicas)
            if replicas:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > _LOADER_IDLE_SECONDS or not _pool_owner_alive():
                break
    except BaseException:  # noqa: BLE001
        code = 1
    if code == 0:
        # With whatever load() started (it leads its own group since setsid); forked replicas have groups of their own.
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(code)


def _pool_owner_alive():
    """InferPool's process, whose id begins INFERPOOL_POOL: once it is gone, no replica will ever connect again."""
    owner = os.environ.get("INFERPOOL_POOL", "").split("-", 1)[0]
    if not owner.isdigit():
        return True
    try:
        os.kill(int(owner), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _point_at_devnull(fd):
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, fd)
    os.close(devnull)


def _reap(replicas):
    """Collects forked replicas that ended, tells each one's replica process how (the exit code a crash left, or
    128 + the signal that killed it), and forgets their connections."""
    while replicas:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        for connection, forked in list(replicas.items()):
            if forked == pid:
                del replicas[connection]
                try:
                    connection.send(json.dumps({"exit": code if code >= 0 else 128 - code}).encode())
                except OSError:
                    pass  # the replica process is gone already, or heard from its replica first
                connection.close()


def _still_connected(connection):
    try:
        return connection.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _load_single_threaded(load):
    """Runs load() with torch held at one thread, whether torch was imported before or is imported inside load():
    OpenMP's thread pool does not survive fork(), and a forked replica whose parent ran a parallel region with more
    than one thread hangs in its first one. Each forked replica sets its own thread count after the fork."""
    import builtins

    os.environ["OMP_NUM_THREADS"] = "1"  # for OpenMP runtimes that start during load()
    original_import = builtins.__import__
    held = {}

    def hold(torch):
        set_num_threads = getattr(torch, "set_num_threads", None)
        if set_num_threads is None or held:
            return
        held["set_num_threads"] = set_num_threads
        held["torch"] = torch
        set_num_threads(1)
        torch.set_num_threads = lambda _threads: set_num_threads(1)

    depth = [0]

    def importing(*args, **kwargs):
        depth[0] += 1
        try:
            return original_import(*args, **kwargs)
        finally:
            depth[0] -= 1
            # Only once the outermost import is done: torch must finish initialising (it documents its own
            # functions, set_num_threads among them, as the last step) before its function is replaced.
            if depth[0] == 0 and "torch" in sys.modules:
                hold(sys.modules["torch"])

    if "torch" in sys.modules:
        hold(sys.modules["torch"])
    builtins.__import__ = importing
    try:
        return load("cpu")
    finally:
        builtins.__import__ = original_import
        if held:
            held["torch"].set_num_threads = held["set_num_threads"]


def _fork_replica(connection, loader_sockets, model, infer, hello, failure):
    """Receives a replica's stdin, stdout, stderr and environment, and forks a process to serve it."""
    try:
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    except OSError:
        return None
    try:
        if len(fds) != 3 or not message:
            return None
        if failure:
            connection.send(json.dumps({"error": failure}).encode())
            return None
        pid = os.fork()
        if pid == 0:
            for loader_socket in loader_sockets:  # the loader's, not this replica's
                loader_socket.close()
            _serve_forked(connection, fds, json.loads(message), model, infer, hello)  # never returns
        return pid
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _serve_forked(connection, fds, environment, model, infer, hello):
    """A forked replica: takes over the replica's descriptors and environment, says hello and serves."""
    global _protocol, _forked
    code = 0
    try:
        _forked = True
        _die_with_parent()  # the loader: if it is killed, nobody would watch over this process any more
        os.setsid()  # a group of its own, so that its children die with it
        stdin, protocol, stderr = fds
        os.dup2(stdin, 0)
        os.dup2(stderr, 2)
        os.dup2(stderr, 1)
        os.close(stdin)
        os.close(stderr)
        _protocol = os.fdopen(protocol, "w", encoding="utf-8", buffering=1)
        os.environ.clear()
        os.environ.update(environment)
        threads = int(os.environ.get("INFERPOOL_THREADS", "0") or 0)
        torch = sys.modules.get("torch")
        if torch is not None and threads > 0:
            torch.set_num_threads(threads)
        threading.Thread(target=_exit_when_stdin_closes, name="inferpool-stdin-watch", daemon=True).start()
        threading.Thread(target=_exit_when_replica_ends, args=(connection,), name="inferpool-replica-watch", daemon=True).start()
        connection.send(json.dumps({"pid": os.getpid()}).encode())
        _send({**hello, "pid": os.getpid()})
        _answer(model, infer, os.fdopen(0, "r", encoding="utf-8", closefd=False))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001
        code = 1
        traceback.print_exc()
    try:
        _protocol.flush()
        connection.send(json.dumps({"exit": code}).encode())
    except OSError:
        pass
    os.killpg(os.getpid(), signal.SIGKILL)  # with whatever it started; the loader reaps it


def _die_with_parent():
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call took effect
        os._exit(_ENDED_WITHOUT_WORD)


def _exit_when_replica_ends(connection):
    """The replica process InferPool started holds the other end: when it dies (killed, InferPool gone), so do we."""
    while True:
        try:
            if not connection.recv(1):
                _leave()
        except OSError:
            _leave()
