"""What a benchmark process costs and where it ran: CPU seconds, peak RSS (overall and per stage), the machine."""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the baseline's dask processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def peak_rss() -> int:
    """Peak resident bytes of this process: VmHWM on Linux, else ru_maxrss.

    Not ru_maxrss on Linux: it survives exec, so a child started from a big parent reports the
    parent's peak (what subprocess's vfork + exec hands over), not its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class StageRSS:
    """Samples this process's resident memory every 20 ms and keeps the peak of each conversion stage."""

    def __init__(self) -> None:
        self.stage, self.peaks = "start", dict[str, int]()
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        if Path("/proc/self/statm").exists():
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * self.page
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            time.sleep(0.02)


def machine() -> dict:
    """CPU count and model, platform, and the versions of Python and the libraries that set the speed."""
    import imagecodecs
    import numcodecs
    import numpy as np
    import zarr

    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return {"cpus": os.cpu_count(), "cpu_model": models[0] if models else platform.processor(),
            "platform": platform.platform(), "python": platform.python_version(), "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__, "imagecodecs": imagecodecs.__version__, "numpy": np.__version__}
