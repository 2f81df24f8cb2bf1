"""How busy the machine looked while a latency table was built: at rest, then beside two busy loops.

    python bench/busy_table.py

Builds the mbv3 table twice with the default settings (into a scratch folder, kept even if busy) and prints
what ``search.load`` recorded each time: the timing thread's CPU share, the units' relative spread, choice
pairs out of FLOP order, the reference probe's speed, and the verdict.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.latency import build_table  # noqa: E402
from supernet.family import get_space  # noqa: E402


def built(out: Path) -> dict:
    table = build_table(get_space("mbv3").config, torch.device("cpu"), out=out, progress=False, keep_busy=True)
    return {**table.data["load"], "probe_ms": table.probe_ms}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        rows = {"at rest": built(Path(scratch) / "rest.json")}
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        try:
            rows["beside two busy loops"] = built(Path(scratch) / "busy.json")
        finally:
            for loop in loops:
                loop.kill()
    for name, load in rows.items():
        print(f"{name:22s} cpu share {load['cpu_share']:.2f}  unit spread {load['unit_spread']:.2f}  out of order "
              f"{load['out_of_order']}/{load['pairs']}  probe {load['probe_ms']:.2f} ms  "
              f"{'BUSY' if load['busy'] else 'quiet'}")


if __name__ == "__main__":
    main()
