"""A worker that finds the helper only where pip installed it (no inferpool_worker.py beside this file)."""
from inferpool_worker import serve


serve(lambda device: None, lambda model, batch: [x * 10 for x in batch], name="installed")
