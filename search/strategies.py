"""Search algorithms over any :class:`search.space.SearchSpace`, all driven through a :class:`Problem`.

Every function takes the problem first and keyword-only, validated settings, draws its randomness from
``seed`` only (random candidates through :meth:`Problem.sample`, bred ones through the space), and returns
the history (every evaluated :class:`Record`, in order, in a list of its own). A :class:`Problem` serves one
search: a second one on it is refused, so two histories never mix. Each proposes batches of candidates whose
choice does not depend on one another's metrics (:meth:`Problem.run_many`), which is what lets several
processes share the evaluations; the result never depends on how many do:

- :func:`random_search`: new plausible samples.
- :func:`grid_search`: every architecture of a space small enough to enumerate.
- :func:`regularized_evolution`: aging evolution with tournaments (Real et al., 2019), one objective.
- :func:`nsga2`: a Pareto front over several objectives (Deb et al., 2002), constraint-domination.
- :func:`bayesian_optimisation`: a Gaussian process on the encoding, expected improvement times the
  probability of meeting bounds on evaluated metrics, maximised over a pool of fresh samples and mutations
  of the best so far.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from search.gp import GaussianProcess, expected_improvement, normal_cdf
from search.problem import Problem, Record, best, check_common, value
from supernet.errors import UserError

Objectives = Sequence[tuple[str, bool]]  # (metric, maximise?)
GRID_LIMIT = 100_000
CHUNK_PER_PROCESS = 4  # random and grid search: candidates per process in each batch (progress, journal)


def _chunk(problem: Problem) -> int:
    return CHUNK_PER_PROCESS * problem.world_size


def random_search(problem: Problem, *, evaluations: int, seed: int = 0) -> list[Record]:
    """``evaluations`` new plausible samples, drawn as in one batch and evaluated in chunks."""
    rng = check_common(evaluations, seed)
    evaluations = problem.capped(evaluations)
    with problem.session(evaluations, "random search"):
        while len(problem.history) < evaluations:
            count = min(_chunk(problem), evaluations - len(problem.history))
            problem.run_many(problem.draw_many(lambda: problem.sample(rng), count))
    return list(problem.history)


def grid_search(problem: Problem, *, evaluations: int | None = None, limit: int = GRID_LIMIT) -> list[Record]:
    """Every plausible architecture in the space's order (the first ``evaluations`` of them if given)."""
    space = problem.space
    size = space.size()
    if size > limit:
        raise UserError(f"grid search would enumerate {size:,} architectures of space "
                        f"{getattr(space, 'name', '?')!r}, more than its limit of {limit:,}: use random search, "
                        "evolution or BO, or a smaller space")
    total = min(size, evaluations) if evaluations else size
    with problem.session(total, "grid search"):
        batch: list[dict] = []
        for arch in space.enumerate():
            if len(problem.history) + len(batch) >= total:
                break
            if problem.space.to_string(arch) not in problem.seen and problem.plausible(arch):
                batch.append(arch)
            if len(batch) == _chunk(problem):
                problem.run_many(batch)
                batch = []
        problem.run_many(batch)
    return list(problem.history)


def regularized_evolution(problem: Problem, *, objective: str, maximize: bool = True, evaluations: int,
                          population: int = 12, children: int = 6, tournament: int = 4,
                          mutation_prob: float = 0.15, crossover_prob: float = 0.5, seed: int = 0) -> list[Record]:
    """``population`` random members, then generations of ``children`` children of tournament winners, each
    replacing the oldest members.

    This is the batched variant of aging evolution: the children of one generation are all bred from the
    same population, and join it (the oldest leaving) together, so a generation is evaluated as one batch
    and several processes can share it. ``children=1`` is the original one-by-one algorithm.
    """
    rng = check_common(evaluations, seed)
    evaluations = problem.capped(evaluations)
    if population < 2 or children < 1 or not 1 <= tournament <= population:
        raise UserError("evolution needs population >= 2, children >= 1 and 1 <= tournament <= population")
    if not 0 <= mutation_prob <= 1 or not 0 <= crossover_prob <= 1:
        raise UserError("mutation and crossover probabilities must lie in [0, 1]")
    space = problem.space

    def winner(alive: list[Record]) -> Record:
        return max(rng.sample(alive, tournament), key=lambda r: value(r, objective, maximize))

    def child(alive: list[Record]) -> dict:
        parent = winner(alive).arch
        if rng.random() < crossover_prob:
            parent = space.crossover(parent, winner(alive).arch, rng)
        return space.mutate(parent, rng, mutation_prob)

    with problem.session(evaluations, "evolution", [objective]):
        alive = problem.run_many(problem.draw_many(lambda: problem.sample(rng), min(population, evaluations)), 0)
        generation = 0
        while len(problem.history) < evaluations:
            generation += 1
            count = min(children, evaluations - len(problem.history))
            alive += problem.run_many(problem.draw_many(lambda: child(alive), count), generation)
            del alive[:count]
    return list(problem.history)


# ---- NSGA-II ----------------------------------------------------------------------------------------
def _points(records: Sequence[Record], objectives: Objectives) -> np.ndarray:
    """Objective values turned into minimisation, one row per record."""
    return np.array([[-r.metrics[m] if up else r.metrics[m] for m, up in objectives] for r in records], dtype=float)


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_fronts(records: Sequence[Record], objectives: Objectives) -> list[list[int]]:
    """Indices of ``records`` by front: feasible ones sorted by Pareto rank, every infeasible one after."""
    pts = _points(records, objectives)
    feasible = [i for i, r in enumerate(records) if r.feasible]
    fronts: list[list[int]] = []
    remaining = feasible
    while remaining:
        front = [i for i in remaining if not any(_dominates(pts[j], pts[i]) for j in remaining if j != i)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    infeasible = [i for i, r in enumerate(records) if not r.feasible]
    return fronts + ([infeasible] if infeasible else [])


def pareto_front(records: Sequence[Record], objectives: Objectives) -> list[Record]:
    """The feasible records no other feasible record dominates, sorted by the first objective."""
    fronts = nondominated_fronts(records, objectives)
    if not fronts or not records[fronts[0][0]].feasible:
        return []
    front = [records[i] for i in fronts[0]]
    metric, up = objectives[0]
    return sorted(front, key=lambda r: -r.metrics[metric] if up else r.metrics[metric])


def _crowding(pts: np.ndarray) -> np.ndarray:
    n = len(pts)
    distance = np.zeros(n)
    for m in range(pts.shape[1]):
        order = np.argsort(pts[:, m], kind="stable")
        span = pts[order[-1], m] - pts[order[0], m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0 and n > 2:
            distance[order[1:-1]] += (pts[order[2:], m] - pts[order[:-2], m]) / span
    return distance


def _rank_and_crowding(records: Sequence[Record], objectives: Objectives) -> tuple[np.ndarray, np.ndarray]:
    rank, crowd = np.zeros(len(records)), np.zeros(len(records))
    pts = _points(records, objectives)
    for level, front in enumerate(nondominated_fronts(records, objectives)):
        rank[front] = level
        crowd[front] = _crowding(pts[front])
    return rank, crowd


def nsga2(problem: Problem, *, objectives: Objectives, evaluations: int, population: int = 12,
          mutation_prob: float = 0.15, crossover_prob: float = 0.9, seed: int = 0) -> list[Record]:
    """Elitist non-dominated sorting with crowding distance; each generation breeds ``population`` children,
    evaluated as one batch (as is the initial population)."""
    rng = check_common(evaluations, seed)
    evaluations = problem.capped(evaluations)
    if len(objectives) < 2:
        raise UserError("NSGA-II needs at least two objectives (use evolution for one)")
    if not all(isinstance(o, (tuple, list)) and len(o) == 2 for o in objectives):
        raise UserError(f"NSGA-II objectives are (metric, maximise?) pairs, got {list(objectives)!r}")
    if population < 2:
        raise UserError("NSGA-II needs a population of at least 2")
    space = problem.space
    with problem.session(evaluations, "NSGA-II", [metric for metric, _ in objectives]):
        parents = problem.run_many(problem.draw_many(lambda: problem.sample(rng), min(population, evaluations)), 0)
        generation = 0
        while len(problem.history) < evaluations:
            generation += 1
            rank, crowd = _rank_and_crowding(parents, objectives)

            def pick() -> Record:
                i, j = rng.randrange(len(parents)), rng.randrange(len(parents))
                better_i = (rank[i], -crowd[i]) <= (rank[j], -crowd[j])
                return parents[i] if better_i else parents[j]

            def breed() -> dict:
                arch = pick().arch
                if rng.random() < crossover_prob:
                    arch = space.crossover(arch, pick().arch, rng)
                return space.mutate(arch, rng, mutation_prob)

            offspring = problem.run_many(problem.draw_many(breed, min(population, evaluations - len(problem.history))),
                                         generation)
            merged = parents + offspring
            chosen: list[Record] = []
            pts = _points(merged, objectives)
            for front in nondominated_fronts(merged, objectives):
                if len(chosen) + len(front) <= population:
                    chosen += [merged[i] for i in front]
                    continue
                crowd_front = _crowding(pts[front])
                order = sorted(range(len(front)), key=lambda k: -crowd_front[k])
                chosen += [merged[front[k]] for k in order[:population - len(chosen)]]
                break
            parents = chosen
    return list(problem.history)


# ---- Bayesian optimisation --------------------------------------------------------------------------
def bayesian_optimisation(problem: Problem, *, objective: str, maximize: bool = True, evaluations: int,
                          initial: int = 10, pool: int = 300, xi: float = 0.01, seed: int = 0) -> list[Record]:
    """``initial`` random evaluations, then one at a time the pool candidate of highest constrained EI.

    Bounds on estimated metrics filter the pool; each bound on an evaluated metric gets its own GP and
    multiplies EI by the probability of meeting it (Gardner et al., 2014). Only the initial design is one
    batch that processes share; each later step needs the metrics of the one before, so it evaluates one
    candidate (on rank 0) while the other processes wait.
    """
    rng = check_common(evaluations, seed)
    evaluations = problem.capped(evaluations)
    if initial < 2 or pool < 1:
        raise UserError("BO needs at least 2 initial random evaluations and a pool of at least 1")
    space = problem.space
    with problem.session(evaluations, "BO", [objective]):
        design = problem.run_many(problem.draw_many(lambda: problem.sample(rng), min(initial, evaluations)))
        if not _finite(design, objective):
            raise UserError(f"BO: the objective {objective!r} is NaN or infinite in all {len(design)} initial "
                            "evaluations, so there is nothing to model; check the evaluator")
        while len(problem.history) < evaluations:
            history = _finite(problem.history, objective)  # a NaN or infinite objective teaches the GP nothing
            x = np.array([space.encode(r.arch) for r in history])
            y = np.array([float(r.metrics[objective]) * (1 if maximize else -1) for r in history])
            incumbent_record = best(history, objective, maximize)
            incumbent = value(incumbent_record, objective, maximize) if incumbent_record else float(y.min())
            elite = sorted(history, key=lambda r: -value(r, objective, maximize))[:10]
            candidates, keys = [], set()
            for k in range(pool):
                try:
                    make = (lambda: problem.sample(rng)) if k % 2 == 0 else (
                        lambda: space.mutate(elite[rng.randrange(len(elite))].arch, rng, 0.15))
                    arch = problem.draw(make)
                except UserError:
                    break
                key = space.to_string(arch)
                if key not in keys:
                    keys.add(key)
                    candidates.append(arch)
            if not candidates:
                raise UserError("BO found no new feasible candidate: the space is exhausted or the bounds too tight")
            xc = np.array([space.encode(a) for a in candidates])
            mean, std = GaussianProcess().fit(x, y).predict(xc)
            score = expected_improvement(mean, std, incumbent, xi)
            cheap = problem.estimated(candidates[0])
            for bound in (b for b in problem.bounds if b.metric not in cheap):
                known = _finite(problem.history, bound.metric)
                if not known:
                    continue
                values = np.array([float(r.metrics[bound.metric]) for r in known])
                m, s = GaussianProcess().fit(np.array([space.encode(r.arch) for r in known]), values).predict(xc)
                ok = np.ones(len(candidates))
                if bound.upper is not None:
                    ok = ok * normal_cdf((bound.upper - m) / s)
                if bound.lower is not None:
                    ok = ok * normal_cdf((m - bound.lower) / s)
                score = score * ok
            problem.run(candidates[int(np.argmax(score))], len(problem.history))
    return list(problem.history)


def _finite(records: Sequence[Record], metric: str) -> list[Record]:
    """The records whose ``metric`` is a finite number."""
    return [r for r in records if math.isfinite(float(r.metrics[metric]))]
