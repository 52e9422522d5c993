"""Peak RSS of a process tree, sampled from /proc (Linux) in a background thread."""

from __future__ import annotations

import os
import threading
import time


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreeSampler:
    """Peak RSS per role: the root (driver Python), java (the JVM), python workers."""

    def __init__(self, root: int, interval: float = 0.2):
        self.root, self.interval = root, interval
        self.peak = {"driver_python": 0.0, "jvm": 0.0, "worker_python_max": 0.0, "tree_total": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            kids = _children()
            stack, total = [self.root], 0.0
            while stack:
                pid = stack.pop()
                rss = _rss_mb(pid)
                total += rss
                if pid == self.root:
                    role = "driver_python"
                elif "java" in _cmd(pid).split(" ", 1)[0]:
                    role = "jvm"
                else:
                    role = "worker_python_max"
                self.peak[role] = max(self.peak[role], rss)
                stack.extend(kids.get(pid, []))
            self.peak["tree_total"] = max(self.peak["tree_total"], total)
            time.sleep(self.interval)
