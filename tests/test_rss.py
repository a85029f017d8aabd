"""Peak memory of child processes: sampled while they run, not taken from their parent's peak."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vgtool.rss import ChildPeakSampler, own_peak_mib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A child that holds about 200 MiB for a second, then exits.
_HOLD = "import time; block = bytearray(200 * 1024 * 1024); block[::4096] = b'1' * len(block[::4096]); time.sleep(1)"


def test_the_sampler_reports_the_memory_of_the_child_itself():
    before = own_peak_mib()
    with ChildPeakSampler(interval=0.02) as sampler:
        subprocess.run([sys.executable, "-c", _HOLD], check=True)
    assert sampler.peak_mib is not None and 200 <= sampler.peak_mib < 200 + before
    assert own_peak_mib() < before + 50  # the parent itself did not grow


def test_no_children_no_memory():
    with ChildPeakSampler(interval=0.01) as sampler:
        pass
    assert sampler.peak_mib == 0.0
