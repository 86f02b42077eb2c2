"""The GIL is released during work, Ctrl-C stops it cleanly, and memory is not copied again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from safetensors.torch import save_file

import dmx
import dmx.torch


@pytest.fixture
def big(tmp_path):
    """A model of 80 MiB of float32 noise (about 0.15 s to compress losslessly with one
    thread on the 2-core development machine, 0.5 s with ``mode="auto"``)."""
    g = torch.Generator().manual_seed(1)
    p = tmp_path / "big.safetensors"
    save_file({f"w{i}": torch.randn(1024, 1024, generator=g) for i in range(20)}, str(p))
    return p


@pytest.fixture
def bigger(tmp_path):
    """A model of 160 MiB of float32 noise: about a second to compress with one thread and
    ``mode="auto"``, several times the 0.1–0.2 s a Ctrl-C takes to reach the work (the
    calling thread checks signals every 100 ms)."""
    g = torch.Generator().manual_seed(2)
    p = tmp_path / "big.safetensors"
    save_file({f"w{i}": torch.randn(1024, 1024, generator=g) for i in range(40)}, str(p))
    return p


def test_another_thread_runs_while_compress_works(tmp_path, big):
    ticks = 0
    stop = threading.Event()

    def count():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    try:
        before = ticks
        start = time.perf_counter()
        dmx.compress(big, tmp_path / "big.dmx", threads=1)
        elapsed = time.perf_counter() - start
        during = ticks - before
    finally:
        stop.set()
        t.join()
    # With the GIL held the counter would stand still for the whole call.
    assert during >= max(5, int(elapsed * 1000) // 20), (during, elapsed)


def test_ctrl_c_stops_the_work_and_leaves_no_output(tmp_path, bigger):
    out = tmp_path / "big.dmx"
    sent = []

    def progress(phase, done, total):
        # A real SIGINT, sent mid-work from the calling thread (as a terminal's Ctrl-C).
        if not sent and done < total:
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

    # A lossy mode that weighs candidates: long enough work (the lossless codecs finish 80
    # MiB within the calling thread's first 100 ms tick on a fast machine).
    with pytest.raises(KeyboardInterrupt):
        dmx.compress(bigger, out, threads=1, progress=progress, mode="auto", max_rel_error=1e-3)
    assert sent, "the work ended before the first progress report"
    # Within about a second (a window of chunks) in a release build; slack for debug builds
    # and busy machines.
    assert time.perf_counter() - sent[0] < 3.0
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["big.safetensors"]


def test_an_exception_in_the_progress_callback_cancels_the_work(tmp_path, bigger):
    class Stop(Exception):
        pass

    def progress(phase, done, total):
        raise Stop()

    # Work that outlasts the first report (as for Ctrl-C above), so the exception cancels it.
    with pytest.raises(Stop):
        dmx.compress(
            bigger, tmp_path / "x.dmx", threads=1, progress=progress, mode="auto",
            max_rel_error=1e-3,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["big.safetensors"]


def test_load_file_allocates_each_tensor_once(tmp_path):
    """Peak RSS of load_file stays near the size of the model: tensors are decoded into
    their own memory, never into a buffer copied afterwards."""
    p = tmp_path / "one.dmx"
    dmx.torch.save_file({"w": torch.randn(64 << 20 >> 2)}, p)  # 64 MiB, one tensor
    code = textwrap.dedent(
        f"""
        import resource, dmx.torch, torch
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = dmx.torch.load_file({str(p)!r}, threads=2)["w"]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grew_mib = int(out.stdout.strip())
    assert grew_mib <= 64 + 24, f"peak RSS grew by {grew_mib} MiB for a 64 MiB tensor"
