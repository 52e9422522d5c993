"""Keep TensorFlow's C++ start-up noise out of the jobs' logs.

On a machine without a GPU every TensorFlow process writes lines such as ``failed call to
cuInit`` and ``Could not find cuda drivers`` to file descriptor 2, before Python-level
logging exists and whatever ``TF_CPP_MIN_LOG_LEVEL`` says (absl writes everything logged
before ``absl::InitializeLog()`` to stderr).  A newcomer reads them as failures.

:func:`install` routes descriptor 2 through a pipe and a thread that drops exactly those
lines (absl INFO/WARNING lines, the CPU-feature notice, and the ERROR lines that only say a
CUDA driver or CUDA library is absent) and forwards every other byte unchanged.  Python's
own ``sys.stderr`` keeps writing to the original stream directly, so tracebacks never wait on
the thread.  ``REVIEWPIPE_VERBOSE=1`` (or a job's ``--verbose``) turns the filter off.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

VERBOSE_ENV = "REVIEWPIPE_VERBOSE"

# absl's own line format: severity letter, MMDD, time, thread id, file:line]
_ABSL = re.compile(rb"^[IWEF]\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")
_ABSL_INFO_WARNING = re.compile(rb"^[IW]\d{4} ")
# ERROR lines that only report the absence of CUDA (a CPU machine) or a CPU kernel fallback
_HARMLESS_ERRORS = re.compile(
    rb"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|"
    rb"oneDNN supports DT_[A-Z0-9]+ only on platforms with|kernel driver does not appear to be running")
_NOTICES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",
)

_installed: dict = {}


def is_noise(line: bytes) -> bool:
    """True for a TensorFlow C++ line that says nothing a user must act on."""
    if line.startswith(_NOTICES):
        return True
    if _ABSL.match(line):
        return bool(_ABSL_INFO_WARNING.match(line) or _HARMLESS_ERRORS.search(line))
    return False


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def install() -> bool:
    """Filter descriptor 2 of this process (once); returns whether the filter is on."""
    if _installed or verbose():
        return bool(_installed)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO lines logged after start-up
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable descriptor 2: leave it alone
        return False
    sys.stderr = os.fdopen(os.dup(original), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    thread = threading.Thread(target=_forward, args=(read_end, original), name="native-log-filter", daemon=True)
    thread.start()
    _installed.update(original=original, thread=thread)
    atexit.register(_drain)
    return True


def _forward(read_end: int, out: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if kept:
                os.write(out, kept)
        if pending and not is_noise(pending):
            os.write(out, pending)


def _drain() -> None:
    """At exit: close our end of the pipe so the thread forwards what is left, then stops."""
    if not _installed:
        return
    try:
        os.dup2(_installed["original"], 2)  # the last writer of the pipe goes away
    except OSError:
        return
    _installed["thread"].join(timeout=2)
