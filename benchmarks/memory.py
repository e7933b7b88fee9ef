"""Peak memory of a conversion as the dataset grows (issue 15: flat, at most 1.05x, from 1x to 10x sites).

    python benchmarks/memory.py                  # 1,000 and 10,000 sites, about 5 minutes on 2 cores
    python benchmarks/memory.py 2000 20000

Input: RxRx1-layout datasets of the given numbers of sites, the real RxRx1 PNGs of ../shared/data replicated by hard
links (`convert_bench.inputs.build_input`, as benchmarks/run.py makes them) in a temporary folder. Each is converted
by `platezarr convert SRC OUT` with its defaults, in a fresh process, and that process's peak resident memory
(VmHWM) is printed, then the ratio of each to the first.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from convert_bench.inputs import DEFAULT_SOURCE, build_input, real_sites

PEAK = """
import sys
from converters.cli import main
try:
    main(sys.argv[1:])
except SystemExit as stop:
    if stop.code:
        raise
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
"""


def peak_mib(src: Path, out: Path) -> float:
    """The peak RSS, in MiB, of `platezarr convert src out --no-progress` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", PEAK, "convert", str(src), str(out), "--no-progress"],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the conversion of {src} failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    counts = [int(n) for n in sys.argv[1:]] or [1000, 10000]
    pool = real_sites(DEFAULT_SOURCE)
    if not pool:
        sys.exit(f"no real RxRx1 sites under {DEFAULT_SOURCE}; set PLATEZARR_SHARED_DATA")
    peaks = []
    with tempfile.TemporaryDirectory(prefix="platezarr-memory-") as tmp:
        for n in counts:
            root = Path(tmp) / str(n)
            build_input(pool, n, root)
            peaks.append(peak_mib(root / "images", root / "out.zarr"))
            print(f"{n:>8} sites  peak RSS {peaks[-1]:7.1f} MiB  {peaks[-1] / peaks[0]:.3f}x", flush=True)


if __name__ == "__main__":
    main()
