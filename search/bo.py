"""Find the most accurate subnet under a latency budget by Bayesian optimisation: ``python -m search.bo --latency-ms 10``.

A Gaussian process on the architecture encoding models validation accuracy; after ``--initial`` random
evaluations each next architecture is the one of highest expected improvement among a pool of fresh samples
and mutations of the best so far (candidates breaking a bound on predicted latency, FLOPs or params never
enter the pool). Same flags, scenarios, resuming and results as ``search.evolve`` (see :mod:`search.run`).
"""
from __future__ import annotations

import sys
from typing import Any

from search.problem import Problem, Record
from search.run import SearchConfig, add_common_args, claim_out, resolve, search
from search.strategies import bayesian_optimisation
from supernet.distributed import join
from supernet.errors import DRAWN_MAX, ArgumentParser, int_range, non_negative_float, run_cli


def parse_args(argv: list[str] | None) -> tuple[SearchConfig, bool]:
    parser = ArgumentParser(prog="python -m search.bo", description=__doc__.splitlines()[0])
    add_common_args(parser, out="runs/bo")
    parser.add_argument("--initial", type=int_range(2), default=10, help="random evaluations before the model leads")
    parser.add_argument("--pool", type=int_range(1, DRAWN_MAX), default=300,
                        help="candidates scored by the acquisition per step")
    parser.add_argument("--xi", type=non_negative_float, default=0.01,
                        help="exploration margin of expected improvement")
    args = parser.parse_args(argv)
    return resolve(args, "bo", {"initial": args.initial, "pool": args.pool, "xi": args.xi}, parser), args.overwrite


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, overwrite = parse_args(argv)
    o = config.options

    def run(problem: Problem, objective: str, seed: int) -> list[Record]:
        return bayesian_optimisation(problem, objective=objective, evaluations=config.evaluations,
                                     initial=o["initial"], pool=o["pool"], xi=o["xi"], seed=seed)
    # evaluations run on the CPU; under torchrun the processes share the initial ones, rank 0 alone claims OUT
    with join("cpu") as group, group.on_main(lambda: claim_out(config, overwrite)):
        return search(config, run, ["python", "-m", "search.bo", *(sys.argv[1:] if argv is None else argv)], group)


if __name__ == "__main__":
    run_cli(main)
