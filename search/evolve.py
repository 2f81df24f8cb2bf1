"""Find the most accurate subnet under a latency budget by evolution: ``python -m search.evolve --latency-ms 10``.

With no other flag it searches the supernet shipped in the package, on Fashion-MNIST's validation split,
against this device's latency table (measured on first use, then cached), with regularized evolution;
``--algorithm nsga2`` evolves a Pareto front of accuracy against latency instead, ``random`` samples.
``--scenarios cpu:5,cpu:10,cpu:20`` serves several budgets or devices in one run. Candidates whose predicted
latency (or FLOPs, params) breaks a bound are redrawn before they are evaluated. See :mod:`search.run` for
verification, resuming and the results written; ``torchrun --nproc-per-node N -m search.evolve ...`` shares
the evaluations over N processes with the same result.
"""
from __future__ import annotations

import sys
from typing import Any

from search.problem import Problem, Record
from search.run import SearchConfig, add_common_args, claim_out, resolve, search
from search.strategies import nsga2, random_search, regularized_evolution
from supernet.distributed import join
from supernet.errors import ArgumentParser, int_range, run_cli, unit_interval

ALGORITHMS = ("evolution", "nsga2", "random")


def parse_args(argv: list[str] | None) -> tuple[SearchConfig, bool]:
    parser = ArgumentParser(prog="python -m search.evolve", description=__doc__.splitlines()[0])
    add_common_args(parser, out="runs/evolve")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="evolution",
                        help="regularized evolution, NSGA-II (a Pareto front) or random sampling")
    parser.add_argument("--population", type=int_range(2), default=12, help="architectures alive at once")
    parser.add_argument("--children", type=int_range(), default=6, help="children per generation (evolution)")
    parser.add_argument("--tournament", type=int_range(), default=4, help="tournament size (evolution)")
    parser.add_argument("--mutation-prob", type=unit_interval, default=0.15, help="chance that a mutation changes each choice")
    parser.add_argument("--crossover-prob", type=unit_interval, default=0.5, help="chance that a child is a crossover of two parents")
    args = parser.parse_args(argv)
    if args.algorithm == "evolution" and args.tournament > args.population:
        parser.error(f"--tournament {args.tournament} is larger than --population {args.population}: a tournament "
                     "draws from the population; lower --tournament or raise --population")
    options = {k: getattr(args, k) for k in ("population", "children", "tournament", "mutation_prob", "crossover_prob")}
    return resolve(args, args.algorithm, options, parser), args.overwrite


def algorithm_for(config: SearchConfig):
    """``(problem, objective, seed) -> history`` running the configured algorithm with its options."""
    o, n = config.options, config.evaluations

    def run(problem: Problem, objective: str, seed: int) -> list[Record]:
        if config.algorithm == "random":
            return random_search(problem, evaluations=n, seed=seed)
        if config.algorithm == "nsga2":
            latency = problem.bounds[0].metric
            return nsga2(problem, objectives=[(objective, True), (latency, False)], evaluations=n,
                         population=o["population"], mutation_prob=o["mutation_prob"],
                         crossover_prob=o["crossover_prob"], seed=seed)
        return regularized_evolution(problem, objective=objective, evaluations=n, population=o["population"],
                                     children=o["children"], tournament=o["tournament"],
                                     mutation_prob=o["mutation_prob"], crossover_prob=o["crossover_prob"], seed=seed)
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, overwrite = parse_args(argv)
    # evaluations run on the CPU; under torchrun the processes share them, and rank 0 alone claims OUT
    with join("cpu") as group, group.on_main(lambda: claim_out(config, overwrite)):
        return search(config, algorithm_for(config),
                      ["python", "-m", "search.evolve", *(sys.argv[1:] if argv is None else argv)], group)


if __name__ == "__main__":
    run_cli(main)
