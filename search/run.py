"""Search the supernet for one or several deployment scenarios: what ``search.evolve`` and ``search.bo`` run.

A *scenario* is a device and a latency budget (``cpu:10``: 10 ms on this CPU; ``cuda:0:5``), optionally under
``--max-flops`` / ``--max-params``. One invocation serves every scenario from the same supernet: the
algorithm runs once per scenario (with ``--evaluations`` each), all runs share one journal, so an
architecture evaluated for one scenario is never evaluated again for another, and each scenario's winner is
picked from *every* architecture evaluated. Predicted latency comes from each device's latency table; the
best candidates of each scenario are then timed end to end as the table was, and the winner is the most
accurate whose *measured* latency meets the budget (a result says plainly when none does).

``OUT/journal.json`` is rewritten after every evaluation: rerun the same command to resume an interrupted
search; it finishes with the same result as an uninterrupted run. An ``--out`` holding another search (its
journal differs, or results without a journal) is refused unless ``--overwrite`` (start over), and so is one
another process is writing (see :mod:`supernet.outdir`). Results: ``OUT/results.json`` (every
evaluated architecture, the Pareto front of accuracy against latency, the winner of each scenario, the
resolved config) and ``OUT/search.png``.

``torchrun --nproc-per-node N -m search.evolve ...`` shares each batch of evaluations over N processes (see
:mod:`search.problem`); every process runs the same seeded algorithm, so the result is the one a single
process finds with the same seed. Rank 0 alone loads or builds a latency table (the others receive it), times
the winners, writes the journal and results, and prints; ``results.json`` records ``world_size`` and how many
evaluations each rank made.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from search.evaluate import DEFAULT_CALIBRATION, SupernetEvaluator, checkpoint_splits
from search.guided import (AUTO, DEFAULT_SCREEN, NONE, PREDICTED, Seeded, describe, predictor_evaluator,
                           predictor_choice, resolve_predictor, screen)
from search.latency import (BATCH_SIZE, DEFAULT_BATCH_SIZE, DEFAULT_THREADS, THREADS, LatencyTable, parse_device,
                            table_for)
from search.plot import plot_search
from search.problem import Bound, Journal, Problem, Record
from search.strategies import pareto_front
from search.timing import RUNTIMES, plausible_ms
from supernet.checkpoint import PRETRAINED, load_checkpoint, load_supernet, trained_data
from supernet.cpuload import AdaptiveThreads
from supernet.distributed import Group
from supernet.errors import UserError, int_range, positive_float, random_seed
from supernet.family import config_from_dict
from supernet.io import read_json, write_json
from supernet.outdir import budget_label, claim_folder, run_folder
from supernet.schema import (ANYTHING, BOOLEAN, CHOICE, COUNT, INTEGER, NUMBER, POSITIVE, TEXT, Each, Nullable,
                             Optional, check_document)
from supernet.sampler import WindowDraws, flops_params_table, score_python


@dataclass
class Scenario:
    """A latency budget on a device."""

    device: str
    latency_ms: float

    @property
    def name(self) -> str:
        return f"{self.device}:{self.latency_ms:g}"

    @property
    def metric(self) -> str:
        return f"latency_ms@{self.device}"


MAX_SCENARIOS = 1000
DEFAULT_VERIFY = 5  # candidates verified per scenario
VERIFY_IN_ALL = 25  # supernet verifications a run of many scenarios aims at (see default_verify)
_RANGE = re.compile(r"([0-9.]+)-([0-9.]+)/([0-9.]+)")


def _budgets(text: str) -> list[float]:
    """``"10"`` -> [10.0]; ``"5-25/0.5"`` -> 5, 5.5, ..., 25 (both ends included); [] if malformed."""
    match = _RANGE.fullmatch(text)
    try:
        if not match:
            return [float(text)]
        start, stop, step = (float(g) for g in match.groups())
    except ValueError:
        return []
    if not (step > 0 and stop >= start) or (stop - start) / step >= MAX_SCENARIOS:
        return []
    return [round(start + i * step, 6) for i in range(int(round((stop - start) / step, 6)) + 1)]


def parse_scenarios(text: str) -> list[Scenario]:
    """``"cpu:5,cpu:10,cuda:0:20"`` -> scenarios, ``"cpu:5-25/0.5"`` a range of budgets (41 here); a one-line
    error naming the bad item otherwise."""
    scenarios = []
    for item in (part.strip() for part in text.split(",")):
        device, _, budget = item.rpartition(":")
        budgets = _budgets(budget)
        if not device or not budgets or not all(positive_float.contains(b) for b in budgets):
            raise UserError(f"scenario {item!r} is not DEVICE:BUDGET_MS or DEVICE:FROM-TO/STEP with budgets of "
                            f"{positive_float.describe()} (e.g. cpu:10, cuda:0:5 or cpu:5-25/0.5), at most "
                            f"{MAX_SCENARIOS} in all")
        scenarios += [Scenario(str(parse_device(device)), b) for b in budgets]
    if len(scenarios) > MAX_SCENARIOS:
        raise UserError(f"--scenarios {text!r} names {len(scenarios)} scenarios, more than {MAX_SCENARIOS}")
    if len({s.name for s in scenarios}) != len(scenarios):
        raise UserError(f"--scenarios {text!r} names a scenario twice")
    return scenarios


@dataclass
class SearchConfig:
    """The resolved settings of a supernet search; saved with its results."""

    scenarios: list[Scenario]
    algorithm: str = "evolution"
    evaluations: int = 48
    predictor: str = NONE  # the file a guided search ranks by (see search.guided), or "none": the supernet
    screen: int = DEFAULT_SCREEN  # architectures a guided search screens per scenario before the algorithm
    max_flops: float | None = None
    max_params: float | None = None
    checkpoint: str = str(PRETRAINED)
    data: str = ""  # "": the dataset the supernet was trained on
    table: str | None = None
    allow_foreign_table: bool = False
    # The latency setting: None where not asked for, so the table's is used (or, with no table, the default);
    # the config saved with the results holds the setting every table of the search was measured with.
    batch_size: int | None = None
    threads: int | None = None
    runtime: str | None = None
    calibration_size: int = DEFAULT_CALIBRATION
    verify: int = 5
    seed: int = 0
    out: str = "runs/evolve"
    options: dict[str, Any] = field(default_factory=dict)  # the algorithm's own settings


MAX_SCREEN = 1_000_000  # features of a million architectures: about 0.5 GB
DIRECT_EVALUATIONS, GUIDED_EVALUATIONS, GUIDED_BO_EVALUATIONS = 48, 300, 60  # BO refits its GP every step
RUN_FILES = ("journal.json", "results.json", "search.png")  # what makes OUT a search; --overwrite removes them


def add_common_args(parser: argparse.ArgumentParser, out: str) -> None:
    """Flags every supernet search CLI shares."""
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--latency-ms", type=positive_float, help="latency budget in milliseconds on --device")
    budget.add_argument("--scenarios", help="several DEVICE:BUDGET_MS, comma-separated (e.g. cpu:5,cpu:10,cpu:20), or "
                        "a range DEVICE:FROM-TO/STEP (cpu:5-25/0.5: 41 budgets)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N, for --latency-ms (default cpu)")
    parser.add_argument("--evaluations", type=int_range(), default=None,
                        help=f"architectures evaluated per scenario (default: {DIRECT_EVALUATIONS} by the supernet, "
                             f"{GUIDED_EVALUATIONS} by a predictor, {GUIDED_BO_EVALUATIONS} for BO)")
    parser.add_argument("--predictor", default=AUTO,
                        help="accuracy predictor the search ranks by, the best then evaluated by the supernet "
                             "(see search.guided): auto (default: CHECKPOINT's NAME.predictor.pt if it exists), "
                             "none (the supernet evaluates every candidate), or a file")
    parser.add_argument("--screen", type=int_range(0, MAX_SCREEN), default=DEFAULT_SCREEN,
                        help="with a predictor: architectures drawn within the budget and scored at once, whose best "
                             "start the search")
    parser.add_argument("--max-flops", type=positive_float, default=None, help="upper bound on multiply-adds")
    parser.add_argument("--max-params", type=positive_float, default=None, help="upper bound on parameters")
    parser.add_argument("--checkpoint", default=str(PRETRAINED), help="supernet checkpoint (default: shipped)")
    parser.add_argument("--data", default="", help="dataset folder (default: the one the supernet was trained on)")
    parser.add_argument("--table", default=None, help="latency table file (one device only; default: cached)")
    parser.add_argument("--allow-foreign-table", action="store_true",
                        help="accept a table measured on another device, with a warning")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=None,
                        help=f"latency batch size (default: the --table's, else {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--threads", type=THREADS, default=None,
                        help=f"torch threads while timing (default: the --table's, else {DEFAULT_THREADS}; 0: torch's own)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="latency runtime (default: the --table's, else eager)")
    parser.add_argument("--calibration-size", type=int_range(), default=DEFAULT_CALIBRATION,
                        help="training images used to recalibrate batch norm")
    parser.add_argument("--verify", type=int_range(), default=None,
                        help="best candidates per scenario checked (a guided search evaluates them with the "
                        "supernet, and every scenario picks from all the scenarios' that meet its budget); timed "
                        "end to end from the most accurate until one meets the budget (default: 5, and with more "
                        f"than five scenarios about {VERIFY_IN_ALL} in all, at least 2 each)")
    parser.add_argument("--seed", type=random_seed, default=0, help="seed of the search algorithm's draws")
    parser.add_argument("--out", default=None,
                        help=f"output folder; rerun to resume (default: {out}/SPACE-BUDGETS-seedN, plus a short hash "
                             "when other flags differ from their defaults)")
    parser.set_defaults(out_base=out)
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start over in an --out that holds a search (removes its {', '.join(RUN_FILES)})")


def claim_out(config: SearchConfig, overwrite: bool) -> AbstractContextManager[Path]:
    """Claim ``config.out`` for a search (:func:`supernet.outdir.claim_folder`): its journal, if any, is resumed
    when it is the same search's (else :class:`Journal` refuses it); results without a journal are refused."""
    out = Path(config.out)
    resume = not overwrite and (out / "journal.json").exists()
    return claim_folder(out, what="a search", run_files=RUN_FILES, resume=resume, overwrite=overwrite)


# Flags a default --out names (or that do not change what a search finds): left out of its hash.
NAMED_FLAGS = ("latency_ms", "scenarios", "device", "seed", "algorithm", "out", "out_base", "overwrite", "verify")


def resolve(args: argparse.Namespace, algorithm: str, options: dict[str, Any],
            parser: argparse.ArgumentParser) -> SearchConfig:
    """Checked :class:`SearchConfig` from parsed common flags and the algorithm's own options; without
    ``--out``, the run's default folder (:func:`default_out`)."""
    if args.latency_ms is not None:  # the numbers were checked by their flags' types
        scenarios = [Scenario(str(parse_device(args.device)), args.latency_ms)]
    else:
        scenarios = parse_scenarios(args.scenarios)
    if args.table and len({s.device for s in scenarios}) > 1:
        raise UserError("--table names one table, but the scenarios use several devices: leave it out to use "
                        "each device's cached table")
    common = {f.name for f in dataclasses.fields(SearchConfig)} - {"scenarios", "algorithm", "options", "out",
                                                                   "predictor", "evaluations", "verify"}
    predictor = predictor_choice(args.predictor, args.checkpoint)
    default = (DIRECT_EVALUATIONS if predictor == NONE else
               GUIDED_BO_EVALUATIONS if algorithm == "bo" else GUIDED_EVALUATIONS)
    evaluations = args.evaluations or default
    named = argparse.Namespace(**{**vars(args), "evaluations": None if evaluations == default else evaluations})
    out = args.out or default_out(named, scenarios, parser)
    return SearchConfig(scenarios=scenarios, algorithm=algorithm, options=options, out=out, predictor=predictor,
                        evaluations=evaluations, verify=args.verify or default_verify(len(scenarios)),
                        **{k: v for k, v in vars(args).items() if k in common})


def default_verify(scenarios: int) -> int:
    """Candidates verified per scenario unless ``--verify`` says: 5, and with many scenarios fewer each (about
    :data:`VERIFY_IN_ALL` in all, at least 2), since each scenario picks from every scenario's verified ones.

    On 40 budgets across the shipped supernet's range, 2 each with the scenarios' candidates pooled found
    winners as accurate on average as 5 each without pooling, with 38 supernet evaluations instead of 87
    (``bench/README.md``).
    """
    return min(DEFAULT_VERIFY, max(2, math.ceil(VERIFY_IN_ALL / scenarios)))


def default_out(args: argparse.Namespace, scenarios: list[Scenario], parser: argparse.ArgumentParser) -> str:
    """``runs/evolve/mbv3-cpu-10ms-seed0`` and the like (:func:`supernet.outdir.run_folder`): the checkpoint's
    space, the budgets, the algorithm where it is not the command's default, the seed; other flags that differ
    from their defaults add a hash. Reads the checkpoint's header to name its space (0.1 s for the shipped one)."""
    space = config_from_dict(load_checkpoint(args.checkpoint)["space"], f"checkpoint {args.checkpoint}").name
    label = f"{space}-{budget_label([(s.device, s.latency_ms) for s in scenarios])}"
    if getattr(args, "algorithm", None) not in (None, parser.get_default("algorithm")):
        label += f"-{args.algorithm}"
    settings = {k: v for k, v in vars(args).items() if k not in NAMED_FLAGS}
    return run_folder(args.out_base, label, args.seed, settings, {k: parser.get_default(k) for k in settings})


RESULTS_KEYS = ("scenarios", "winners", "history", "pareto_front", "latency_metric")

# The shape of results.json as :func:`search` writes it: every field a reader (export, retrain, ensemble,
# report, plot_search) uses. Fields the readers take with a default are Optional, but checked when present.
RECORD = {"arch": Each(CHOICE), "arch_string": TEXT, "metrics": Each(NUMBER, required=("val_top1",)),
          "generation": INTEGER, "feasible": Optional(BOOLEAN)}
VERIFIED = {**RECORD, "predicted_latency_ms": NUMBER, "measured_latency_ms": POSITIVE,
            "measured_spread_ms": Optional(NUMBER), "meets_budget": BOOLEAN}
RESULTS_SCHEMA = {
    "scenarios": [{"name": TEXT, "device": TEXT, "latency_ms": POSITIVE}],
    "winners": Each({**VERIFIED, "budget_ms": POSITIVE, "device": TEXT, "verified": Optional([VERIFIED]),
                      "scored": Optional([RECORD])}),
    "history": [RECORD],
    "pareto_front": [TEXT],
    "latency_metric": TEXT,
    "checkpoint": Optional({"path": Optional(Nullable(TEXT)), "command": Optional(Nullable([TEXT]))}),
    "tables": Optional(Each({"path": Optional(Nullable(TEXT)), "fingerprint": Optional(Each(ANYTHING))})),
    "evaluations": Optional(INTEGER),
    "config": Optional({"algorithm": Optional(TEXT), "seed": Optional(INTEGER), "checkpoint": Optional(TEXT),
                        "data": Optional(TEXT), "calibration_size": Optional(COUNT)}),
    "command": Optional(Nullable([TEXT])),
}


def read_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` that :func:`search` wrote; anything else is refused in one line naming the field.

    The one reader of search results: export, retrain, ensemble and report all take them from here, so the
    shape they rely on (:data:`RESULTS_SCHEMA`, and how its parts refer to each other) is checked once.
    """
    results = read_json(path, "search results")
    if not isinstance(results, dict) or any(k not in results for k in RESULTS_KEYS):
        raise UserError(f"{path} is not the results.json of a search (python -m search.evolve or search.bo)")
    what, fix = f"{path} is a malformed search results.json", "rerun the search to rewrite it"
    check_document(results, RESULTS_SCHEMA, what, fix)
    _check_references(results, what, fix)
    return results


def _check_references(results: dict[str, Any], what: str, fix: str) -> None:
    """The parts of a results.json agree: one winner per scenario, front members and the latency metric known."""
    names = [s["name"] for s in results["scenarios"]]
    if not names:
        raise UserError(f"{what}: it names no scenario; {fix}")
    missing = next((n for n in names if n not in results["winners"]), None)
    if missing is not None:
        raise UserError(f"{what}: scenario {missing!r} has no winner; {fix}")
    history = {r["arch_string"] for r in results["history"]}
    stray = next((k for k in results["pareto_front"] if k not in history), None)
    if stray is not None:
        raise UserError(f"{what}: Pareto-front member {stray!r} is not in its history; {fix}")
    metric = results["latency_metric"]
    records = [(f"history[{i}]", r) for i, r in enumerate(results["history"])]
    records += [(f"winners[{n!r}]", w) for n, w in results["winners"].items()]
    for field, record in records:
        if metric not in record["metrics"]:
            raise UserError(f"{what}: {field}.metrics lacks the latency metric {metric!r}; {fix}")


Algorithm = Callable[[Problem, str, int], list[Record]]  # (problem, objective, seed) -> history


def search(config: SearchConfig, algorithm: Algorithm, command: list[str], group: Group = Group()) -> dict[str, Any]:
    """Run ``algorithm`` for every scenario of ``config``; verify, pick winners, write and return results.

    With a ``group`` of several processes each calls this with the same arguments; all return the same result.
    """
    supernet, meta = load_supernet(config.checkpoint)
    config = dataclasses.replace(config, data=trained_data(meta, config.data))
    space = supernet.space
    predictor = resolve_predictor(config.predictor, config.checkpoint, space)  # refused before anything is timed
    splits = checkpoint_splits(config.data, meta, space.config, config.checkpoint)
    tables: dict[str, LatencyTable] = {}
    for scenario in config.scenarios:
        if scenario.device not in tables:
            tables[scenario.device] = group.from_main(  # built by rank 0 alone if missing
                lambda: table_for(space.config, parse_device(scenario.device), batch_size=config.batch_size,
                                  threads=config.threads, runtime=config.runtime, path=config.table,
                                  allow_foreign=config.allow_foreign_table))
        lowest = tables[scenario.device].lowest_ms()  # over the whole space: not always smallest()'s
        if lowest > scenario.latency_ms:
            raise UserError(f"scenario {scenario.name}: the budget is below the lowest latency the table predicts for "
                            f"any subnet ({lowest:.2f} ms on {scenario.device}): raise it")
    highest = {device: table.highest_ms() for device, table in tables.items()}
    for device, table in tables.items():
        loose = [s.name for s in config.scenarios if s.device == device and s.latency_ms >= highest[device]]
        if loose and group.is_main:
            which = f"scenario {loose[0]}" if len(loose) == 1 else f"scenarios {loose[0]} to {loose[-1]} ({len(loose)})"
            print(f"note: {which}: every subnet meets the budget on this machine (the table predicts "
                  f"{table.lowest_ms():.2f} to {highest[device]:.2f} ms on {device}), so it does not bind; a "
                  "budget in that range trades accuracy for latency", file=sys.stderr)
    config = _with_table_setting(config, next(iter(tables.values())))
    counts = flops_params_table(space.config)

    def estimate(arch: dict) -> dict[str, float]:
        flops, params = score_python(space, arch, counts)
        return {**{f"latency_ms@{d}": t.predict(arch) for d, t in tables.items()}, "flops": flops, "params": params}

    out = Path(config.out)
    identity = {**dataclasses.asdict(config), "tables": {d: t.data.get("created") for d, t in tables.items()}}
    for key in ("out", "verify"):
        identity.pop(key)
    journal = group.from_main(lambda: Journal(out / "journal.json", identity))  # read once; rank 0 writes it
    if len(journal) and group.is_main:
        print(f"resuming {out / 'journal.json'}: {len(journal)} evaluations and {len(journal.measurements)} timings "
              "recorded are replayed, not redone", file=sys.stderr)
    threads = AdaptiveThreads(say=group.is_main)
    evaluator = SupernetEvaluator(supernet, splits, calibration_size=config.calibration_size, threads=threads)
    objective = PREDICTED if predictor else "val_top1"
    if predictor and group.is_main:
        print(f"accuracy predicted by {describe(predictor)}; the {config.verify} best of each scenario are then "
              "evaluated with the supernet", file=sys.stderr)
    fixed = [b for b in (Bound("flops", upper=config.max_flops), Bound("params", upper=config.max_params))
             if b.upper is not None]
    everything: dict[str, Record] = {}
    evaluated = 0
    unbound: dict[str, str] = {}  # device -> the first scenario whose budget every subnet meets
    for number, scenario in enumerate(config.scenarios):
        if scenario.latency_ms >= highest[scenario.device]:
            if scenario.device in unbound:  # the same search as that one's: its winner is picked from the same
                if group.is_main:
                    print(f"scenario {scenario.name}: its budget does not bind, as {unbound[scenario.device]}'s did "
                          "not: that search serves it", file=sys.stderr)
                continue
            unbound[scenario.device] = scenario.name
        sampler = within_budget(scenario, space, tables[scenario.device], group.is_main)
        available = sampler.count if sampler else None
        if predictor:
            threads.update()  # a batched predictor waits on a busy core's thread like an evaluation does
            best = screen(space, predictor, tables[scenario.device].metric_table(), counts, scenario.latency_ms, fixed,
                          count=config.screen, keep=_first_draws(config), seed=config.seed + number)
            sampler = Seeded(best, sampler or space.sample)
        problem = Problem(space, evaluator, evaluate_many=predictor_evaluator(predictor) if predictor else None,
                          bounds=[Bound(scenario.metric, upper=scenario.latency_ms), *fixed], estimate=estimate,
                          journal=None if predictor else journal, group=group, sampler=sampler,
                          progress=not predictor, available=available)
        if group.is_main:
            print(f"scenario {scenario.name}: {config.algorithm}, {config.evaluations} evaluations"
                  + (" by the predictor" if predictor else "")
                  + (f", shared by {group.world_size} processes" if group.world_size > 1 else ""), file=sys.stderr)
        for record in algorithm(problem, objective, config.seed + number):
            everything.setdefault(record.key, record)
        evaluated += problem.evaluated
    history = list(everything.values())
    evaluated_by_rank = group.gather(evaluated)
    predicted = history
    winners, history = group.from_main(lambda: _verify_all(config, history, tables, supernet, fixed, journal,
                                                           evaluator if predictor else None))
    first = config.scenarios[0].metric
    front = pareto_front([dataclasses.replace(r, feasible=True) for r in history], [("val_top1", True), (first, False)])
    result = {
        "scenarios": [dataclasses.asdict(s) | {"name": s.name} for s in config.scenarios],
        "winners": winners,
        "pareto_front": [r.key for r in front],
        "latency_metric": first,
        "figures": _figures(config, predictor, first),
        "checkpoint": {"path": config.checkpoint, "command": meta.get("command")},
        "tables": {d: {"path": str(t.path), "fingerprint": t.fingerprint} for d, t in tables.items()},
        "evaluations": len(predicted),  # by the predictor in a guided search, else by the supernet
        "supernet_evaluations": len(history),
        "world_size": group.world_size,
        "evaluated_by_rank": evaluated_by_rank,  # evaluator calls this run (journal replays not counted)
        "history": [r.to_dict() for r in history],
        **({"predicted": [r.to_dict() for r in predicted]} if predictor else {}),
        "config": dataclasses.asdict(config),
        "command": command,
    }
    if not group.is_main:
        return result
    write_json(out / "results.json", result)
    plot_search(result, out / "search.png")
    for name, w in winners.items():
        verdict = "meets" if w["meets_budget"] else "DOES NOT meet"
        guess = f" (predicted {w['metrics'][PREDICTED]:.4f})" if PREDICTED in w["metrics"] else ""
        print(f"{name:>12}  {w['arch_string']}  val top1 {w['metrics']['val_top1']:.4f}{guess}  predicted "
              f"{w['predicted_latency_ms']:.2f} ms  measured {w['measured_latency_ms']:.2f} ms ({verdict} the budget "
              "when measured)")
    print(f"wrote {out / 'results.json'} and {out / 'search.png'}")
    return result


def within_budget(scenario: Scenario, space: Any, table: LatencyTable, say: bool = True) -> WindowDraws | None:
    """The random candidates of ``scenario``: uniform over the networks whose predicted latency (quantised, see
    :mod:`supernet.sampler`) is within the budget, so a budget near the lowest latency still finds some.

    The window starts at 0, not at :meth:`LatencyTable.lowest_ms`: the quantised sum of the fastest network
    can round below it. Where the window cannot be used (a budget within rounding of the lowest latency, a
    table the sampler refuses), None: the space's own draws, rejected when over budget as before (``say``: a
    line saying so).
    """
    try:
        return WindowDraws(space, table.metric_table(), (0.0, scenario.latency_ms))
    except UserError as err:
        if say:
            print(f"scenario {scenario.name}: random candidates are drawn from the whole space and rejected when "
                  f"over budget ({err})", file=sys.stderr)
        return None


def _with_table_setting(config: SearchConfig, table: LatencyTable) -> SearchConfig:
    """``config`` with the latency setting that ``table`` was measured with, and every measurement uses.

    The tables of one search all have it: a given ``--table`` was checked against any setting asked for, and
    cached tables are looked up by the setting asked for.
    """
    return dataclasses.replace(config, batch_size=table.batch_size, threads=table.settings.threads,
                               runtime=table.settings.runtime)


def _first_draws(config: SearchConfig) -> int:
    """How many random candidates the algorithm draws before it breeds or models: the screened best fill them."""
    return int(config.options.get("population") or config.options.get("initial") or 12)


def _figures(config: SearchConfig, predictor: Any, metric: str) -> dict[str, str]:
    """Where each figure of the results comes from: predicted or measured."""
    figures = {"val_top1": "measured: the supernet's validation top-1 with inherited weights and batch norm "
                           f"recalibrated on {config.calibration_size} training images",
               metric: "predicted by the latency table", "flops": "counted", "params": "counted",
               "measured_latency_ms": "measured end to end, as the table's entries were"}
    if predictor:
        figures[PREDICTED] = f"predicted by {describe(predictor)}"
    return figures


def _verify_all(config: SearchConfig, history: list[Record], tables: dict[str, LatencyTable], supernet: Any,
                fixed: list[Bound], journal: Journal, evaluator: SupernetEvaluator | None
                ) -> tuple[dict[str, dict[str, Any]], list[Record]]:
    """The winner of every scenario, and the history a reader ranks by ``val_top1`` (what the supernet scored).

    A direct search picks each scenario's winner from everything it evaluated. A guided one (``evaluator``)
    first evaluates each scenario's ``--verify`` best by predicted accuracy with the supernet; every scenario then
    picks from all of those that meet its bounds, as a direct search does: a budget gains what its neighbours
    verified, so many scenarios need fewer verifications each.
    """
    if evaluator is None:
        return {s.name: _verify(s, history, tables[s.device], supernet, config, fixed, journal)
                for s in config.scenarios}, history
    own = {s.name: [_scored(r, supernet.space, journal, evaluator)
                    for r in _candidates(s, history, fixed, PREDICTED)[:config.verify]] for s in config.scenarios}
    pool = list({r.key: r for records in own.values() for r in records}.values())
    return {s.name: _verify(s, pool, tables[s.device], supernet, config, fixed, journal, own[s.name])
            for s in config.scenarios}, pool


def _candidates(scenario: Scenario, records: list[Record], fixed: list[Bound], rank: str) -> list[Record]:
    """The records that meet ``scenario``'s bounds (by the table's latency), best ``rank`` first (stable)."""
    bound = Bound(scenario.metric, upper=scenario.latency_ms)
    candidates = sorted((r for r in records if bound.holds(r.metrics) and all(b.holds(r.metrics) for b in fixed)),
                        key=lambda r: -r.metrics[rank])
    if not candidates:
        raise UserError(f"scenario {scenario.name}: no evaluated architecture meets its bounds; raise the budget "
                        "or --evaluations")
    return candidates


def _verify(scenario: Scenario, records: list[Record], table: LatencyTable, supernet: Any, config: SearchConfig,
            fixed: list[Bound], journal: Journal, own: list[Record] | None = None) -> dict[str, Any]:
    """Time the most accurate ``records`` (by the supernet) within ``scenario``'s bounds end to end, from the
    most accurate down; the first whose measurement meets the budget wins: it is the most accurate that does.
    If none of the ``--verify`` best (in a guided search at least :data:`DEFAULT_VERIFY`) meets it, the most
    accurate wins, with a warning.

    ``own``: in a guided search, the scenario's own best by predicted accuracy (evaluated by the supernet); those
    not timed are listed as ``scored``, most accurate first. Timings are journalled, so a resumed search picks
    the same winners.
    """
    device = parse_device(scenario.device)
    timer = table.timer(device)
    verified = []
    # a guided pool is timed at least DEFAULT_VERIFY deep: a timing costs far less than an evaluation
    depth = config.verify if own is None else max(config.verify, DEFAULT_VERIFY)
    for record in _candidates(scenario, records, fixed, "val_top1")[:depth]:
        key = f"{scenario.device}|{record.key}"
        timing = journal.measured(key, lambda: table.measure(  # the network the key names, as it was scored
            supernet.extract(supernet.space.parse(record.key)), device, timer))
        if not plausible_ms(timing.get("median_ms")):
            raise UserError(f"search journal {journal.path}: the timing of {key} is not a time in milliseconds; "
                            "delete the journal to start the search over, or use another --out")
        verified.append({**record.to_dict(), "predicted_latency_ms": record.metrics[scenario.metric],
                         "measured_latency_ms": timing["median_ms"], "measured_spread_ms": timing["spread_ms"],
                         "meets_budget": timing["median_ms"] <= scenario.latency_ms})
        v = verified[-1]
        print(f"verify {scenario.name:>10}  predicted {v['predicted_latency_ms']:6.2f} ms  measured "
              f"{v['measured_latency_ms']:6.2f} ms  {'within' if v['meets_budget'] else 'OVER'} budget  "
              f"val top1 {record.metrics['val_top1']:.4f}"
              + (f" (predicted {record.metrics[PREDICTED]:.4f})" if PREDICTED in record.metrics else "")
              + f"  {record.key}")
        if v["meets_budget"]:
            break
    winner = next((v for v in verified if v["meets_budget"]), verified[0])
    if not winner["meets_budget"]:
        print(f"warning: scenario {scenario.name}: none of the {len(verified)} best candidates met the budget when "
              "measured; raise --verify or rebuild the latency table", file=sys.stderr)
    timed = {v["arch_string"] for v in verified}
    return {**winner, "budget_ms": scenario.latency_ms, "device": scenario.device, "verified": verified,
            **({"scored": [r.to_dict() for r in sorted(own, key=lambda r: -r.metrics["val_top1"])
                           if r.key not in timed]} if own is not None else {})}


def _scored(record: Record, space: Any, journal: Journal, evaluator: SupernetEvaluator) -> Record:
    """``record`` with its supernet accuracy added (journalled: a resumed search does not evaluate it again)."""
    measured = journal.get(record.key)
    if measured is None:
        measured = evaluator(space.parse(record.key))
        journal.put(record.key, measured)
    return dataclasses.replace(record, metrics={**record.metrics, **measured})
