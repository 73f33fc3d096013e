"""What a Train worker's process and the fast path share: a leaf module (it imports nothing of ecg_ray), so
the internals reach it without importing the worker, which imports the fast path, which imports the
internals (an import circle through importlib that tests/test_layout.py now sees)."""

from __future__ import annotations

import threading

REUSABLE = "reusable"  # the key of what train_loop_per_worker returns: may its process run another trial
STOP = threading.Event()  # set (on the fast path, by the worker's controller) when its trial is to end at the next batch
