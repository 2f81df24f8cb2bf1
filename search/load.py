"""Was the machine busy while a latency table was measured? The figures that say so, and what follows.

Pairing every timed call with a reference probe (:mod:`search.timing`) corrects for a machine whose speed
moves in phases. It cannot correct for another process taking the core in the middle of calls: then the
probe is slowed too, the whole table is expressed at the busy speed, and "10 ms" in every later search means
about 6. Three signs of that, measured at rest and beside two busy loops on this project's 2-core VM
(``python bench/busy_table.py``, bench/README.md):

- **CPU share**: of the wall time the timed calls took, the share the timing thread held a core (thread CPU
  time over wall time). 1.00 at rest, 0.65 beside the loops.
- **Unit spread**: the median, over units, of the inter-quartile range of a unit's paired timings relative to
  its median. 0.13 at rest, 0.58 beside the loops.
- **Units out of order**: pairs of parametrised choices at the same block position where the choice with
  fewer FLOPs is measured more than 25% slower (a 3x3 block slower than a 7x7 one). 0 of 576 pairs at rest,
  118 beside the loops; 17 at rest on ``mbv3-fsdd``, whose 5 x 8 feature maps make a wide 3x3 block slower
  than a wide 7x7 one (oneDNN picks other kernels there), so more than 5% of the pairs count.

A build that shows any sign (:func:`assess`) is not cached (:func:`search.latency.build_table`). A cached
table is checked cheaply whenever it is used (:func:`check_on_use`): a few probe calls against the probe
speed it recorded. A table whose probe now runs much faster, on a machine that is quiet now, was measured
under load and is rebuilt. A table given by path is the user's choice: only its own verdict is checked.
"""
from __future__ import annotations

import statistics
import sys
from typing import Any, Mapping

import torch

from search.timing import Timer, TimingSettings

MIN_CPU_SHARE = 0.85
MAX_UNIT_SPREAD = 0.5
MAX_OUT_OF_ORDER = 0.05  # share of the compared pairs: 0 and 3% at rest (mbv3, mbv3-fsdd), 20% beside two busy loops
SLOWER = 1.25  # "out of order": fewer FLOPs, yet this much slower
MIN_REPEATS = 20  # unit spread and order mean something only for medians of this many calls or more (5 gave 2% out of order at rest)
STALE_PROBE_RATIO = 1.5  # a table from before load was assessed: its probe against the probe now
QUIET_STALE_RATIO = 2.0  # a table whose build was assessed quiet: beyond the 1.75x this VM's speed moves in phases
CHECK_CALLS = 60


def assess(timer: Timer, config: Any, entries: Mapping[str, Mapping[str, float]],
           settings: TimingSettings) -> dict[str, Any]:
    """The load figures of a build that timed ``entries`` of ``config`` with ``timer``; ``busy`` and why."""
    from search.latency import medians_table  # search.latency builds on this module
    from supernet.sampler import flops_params_table

    share = timer.cpu_share
    figures: dict[str, Any] = {"cpu_share": share, "unit_spread": None, "out_of_order": None, "pairs": None}
    if settings.repeats >= MIN_REPEATS and entries:
        figures["unit_spread"] = statistics.median(e["spread_ms"] / e["median_ms"] for e in entries.values())
        costs = flops_params_table(config).blocks
        medians = medians_table(config, entries).blocks[..., 0]
        flops, params = costs[..., 0], costs[..., 1]
        # [S, D, C, C]: choice i has fewer FLOPs than choice j at the same block, both with parameters
        fewer = (flops.unsqueeze(-1) < flops.unsqueeze(-2)) & (params.unsqueeze(-1) > 0) & (params.unsqueeze(-2) > 0)
        slower = medians.unsqueeze(-1) > SLOWER * medians.unsqueeze(-2)
        figures.update(out_of_order=int((fewer & slower).sum()), pairs=int(fewer.sum()))
    reasons = []
    if share is not None and share < MIN_CPU_SHARE:
        reasons.append(f"the timing thread held a core {100 * share:.0f}% of the time")
    if figures["unit_spread"] is not None and figures["unit_spread"] > MAX_UNIT_SPREAD:
        reasons.append(f"a unit's repeated timings typically varied by {100 * figures['unit_spread']:.0f}% of "
                       "its median")
    if figures["pairs"] and figures["out_of_order"] > MAX_OUT_OF_ORDER * figures["pairs"]:
        reasons.append(f"{figures['out_of_order']} of {figures['pairs']} pairs of choices were out of order "
                       "(fewer FLOPs, yet slower)")
    return {**figures, "busy": bool(reasons), "reasons": reasons}


def check_on_use(table: Any, device: torch.device) -> str | None:
    """Why the cached ``table`` (a :class:`search.latency.LatencyTable`) should be rebuilt, or None.

    Its build's own verdict first: a table saved although busy, with ``--keep-busy``, is the user's choice
    and is used as it is. Then :data:`CHECK_CALLS` calls of its reference probe now: if the machine is quiet
    now and the probe runs much faster than the table recorded, the table was measured under load. How much
    faster depends on what the table knows: one whose build found the machine quiet (its CPU share was
    measured over the whole build) must be :data:`QUIET_STALE_RATIO` times slower, more than this VM's speed
    phases move (1.75x); one from before builds assessed their load, :data:`STALE_PROBE_RATIO` times. A busy
    machine now says nothing about the table: the probe pairing expresses measurements at the table's speed.
    About 0.2 s on this project's machine.
    """
    load = table.data.get("load")
    if load and load.get("busy"):
        return None if load.get("kept") else busy_reason(load)
    if table.probe_ms is None:
        return None
    timer = table.timer(device)
    now = timer.probe_speed(calls=CHECK_CALLS)
    share = timer.cpu_share
    if share is not None and share < MIN_CPU_SHARE:
        return None
    if table.probe_ms > (QUIET_STALE_RATIO if load else STALE_PROBE_RATIO) * now:
        return (f"its reference probe took {table.probe_ms:.2f} ms when it was measured and takes {now:.2f} ms "
                "now, so it was measured while the machine was busy")
    return None


def busy_reason(load: Mapping[str, Any]) -> str:
    """The reason a table whose ``load`` record says busy is not trusted."""
    return f"it was measured while the machine was busy ({'; '.join(load['reasons'])})"
