"""The stderr filter for TensorFlow's C++ start-up noise (reviewpipe.native_logs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reviewpipe.native_logs import is_noise

LIB = Path(__file__).resolve().parents[1] / "lib"


@pytest.mark.parametrize("line", [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796113155.345225    8277 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1796113155.345568    8277 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    b"E0000 00:00:1796113158.766903    8277 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    b"E0000 00:00:1796112873.552135    5181 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512.",
    b"W0000 00:00:1796113155.1    8277 gpu_device.cc:2] Cannot dlopen some GPU libraries.",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow",
])
def test_start_up_noise_is_dropped(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", [
    b"E0000 00:00:1796113158.766903    8277 bfc_allocator.cc:1] Allocator ran out of memory trying to allocate",
    b"F0000 00:00:1796113158.7    8277 check.cc:9] Check failed: x == y",
    b"Traceback (most recent call last):",
    b"error: train.maxlen 500 is longer than the shards' maxlen 400",
    b"12:01:02 INFO reviewpipe.train: early stopping",
    b"I think this film is great",
])
def test_everything_else_is_kept(line):
    assert not is_noise(line)


SCRIPT = r"""
import os, sys
sys.path.insert(0, {lib!r})
from reviewpipe import native_logs
print(native_logs.install(), flush=True)
os.write(2, b"I0000 00:00:1.1    1 port.cc:153] oneDNN custom operations are on.\n")
os.write(2, b"E0000 00:00:1.2    1 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
os.write(2, b"E0000 00:00:1.3    1 bfc_allocator.cc:1] out of memory\n")
os.write(2, b"a C++ line without an ending")
print("python stderr", file=sys.stderr)
"""


@pytest.mark.parametrize("verbose", ["", "1"])
def test_a_process_keeps_only_the_lines_that_matter(verbose):
    env = {"PATH": "/usr/bin:/bin", "REVIEWPIPE_VERBOSE": verbose}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(lib=str(LIB))], capture_output=True, env=env,
                          timeout=60)
    assert proc.returncode == 0
    lines = proc.stderr.decode().splitlines()
    if verbose:
        assert proc.stdout == b"False\n" and len(lines) == 4 and "cuInit" in lines[1]
    else:
        assert proc.stdout == b"True\n"
        assert sorted(lines) == ["E0000 00:00:1.3    1 bfc_allocator.cc:1] out of memory",
                                 "a C++ line without an ending", "python stderr"]
