"""A PEP 517 build backend in the standard library alone, for the one-module inferpool-worker package.

pip builds the wheel with it in an isolated environment that needs no downloads: the wheel holds
inferpool_worker.py and the dist-info files the wheel format asks for (METADATA, WHEEL, RECORD).
"""
import base64
import hashlib
import io
import os
import tarfile
import zipfile

NAME = "inferpool-worker"
DIST = "inferpool_worker"
VERSION = "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))
METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: Turn a Python inference script into an InferPool worker process: serve(load, infer).
Requires-Python: >=3.8

Define load(device) and infer(model, batch), then call inferpool_worker.serve(load, infer).
The protocol is described in docs/worker-protocol.md of the InferPool repository.
"""


def _read(name):
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


def _hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{DIST}-{VERSION}.dist-info"
    files = {
        "inferpool_worker.py": _read("inferpool_worker.py"),
        f"{info}/METADATA": METADATA.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: _inferpool_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},{_hash(data)},{len(data)}" for path, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = f"{DIST}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def build_sdist(sdist_directory, config_settings=None):
    base = f"{DIST}-{VERSION}"
    sdist = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, sdist), "w:gz") as archive:
        for name in ("pyproject.toml", "_inferpool_build.py", "inferpool_worker.py"):
            archive.add(os.path.join(HERE, name), arcname=f"{base}/{name}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = METADATA.encode()
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return sdist
