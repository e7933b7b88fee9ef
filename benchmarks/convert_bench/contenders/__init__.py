"""The contenders of the conversion benchmark, one module each; a module's `CONTENDERS` lists what it adds.

A contender runs in a fresh subprocess (`python benchmarks/run.py --child NAME ...`), gets a `Job` and
returns a dict of its numbers ("seconds" if it is timed); the runner adds CPU seconds and peak RSS.
To add one, write a module here with `CONTENDERS = [Contender(...)]`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """What a contender subprocess is given: the sites (empty unless it asks for them), paths and settings."""

    manifest: list[dict]
    src: Path  # root/images of the generated RxRx1-layout input
    out: Path  # where to write, removed before the run
    workers: int
    decoder: str  # the fastest imagecodecs PNG decoder, probed
    baseline_decoder: str


@dataclass(frozen=True)
class Contender:
    """One way to do the work, timed in its own process.

    `rank` orders the rotation; `once` runs it in the first repetition only; `flag` names the
    command-line switch (an argparse attribute) without which it does not run; `preload` are modules
    imported before the clock starts; `manifest` is the file of sites it reads, "" for none.
    """

    name: str
    run: Callable[[Job], dict]
    rank: int
    once: bool = False
    flag: str = ""
    preload: tuple[str, ...] = ()
    manifest: str = "manifest.json"


def all_contenders() -> dict[str, Contender]:
    """Every contender of every module of this package, by name, in rank order."""
    found: list[Contender] = []
    for module in pkgutil.iter_modules(__path__):
        found.extend(importlib.import_module(f"{__name__}.{module.name}").CONTENDERS)
    return {c.name: c for c in sorted(found, key=lambda c: c.rank)}
