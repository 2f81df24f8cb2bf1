"""An accuracy predictor learnt from supernet evaluations: ``python -m search.predictor fit --checkpoint CKPT``.

``fit`` draws ``--evaluations`` architectures uniformly (every choice of :meth:`Space.sample` independent and
uniform, seeded by ``--seed``; no two naming the same network) and scores each as the searches do
(:class:`search.evaluate.SupernetEvaluator`: batch norm recalibrated on ``--calibration-size`` training
images, top-1 on the checkpoint's fixed validation split). The evaluations are journalled one by one
(:class:`search.problem.Journal`), so a stopped ``fit`` (``--stop-after``, Ctrl-C, a kill) resumes without
evaluating anything twice, and a later ``fit`` with more ``--evaluations`` adds only the new ones.

A share (``--held-out``) of the evaluated architectures is held out. Each regressor kind of
:mod:`search.regressors` (ridge, MLP, Gaussian process) is fitted on the rest, on the encoding of
:mod:`search.features`, and measured on the held-out ones: Kendall's tau (does it rank two subnets as the
supernet does? what a search needs), Spearman's rho and the RMSE. The kind with the highest held-out tau is
kept. Written beside the checkpoint unless ``--out``: ``NAME.predictor.pt`` (the model, the encoding, the
space, the checkpoint's path and SHA-256, the figures), ``NAME.predictor.json`` (the figures of every kind,
why one was chosen, every held-out point, the config) and ``NAME.predictor.png`` (predicted against supernet
accuracy on the held-out architectures). ``show FILE`` prints a predictor's figures.

In code: ``load_predictor(path, space, checkpoint)`` refuses a predictor of another space or checkpoint in
one line; ``Predictor.predict(archs)`` scores a list of architecture dicts, or an int8 code tensor from
:func:`supernet.sampler.sample`, in one batched call.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from search.accuracy import kendall_tau, spearman_rho
from search.evaluate import DEFAULT_CALIBRATION, SupernetEvaluator, checkpoint_splits
from search.features import features, features_from_codes, spec, width
from search.plot import scatter_png
from search.problem import Journal, Problem
from search.regressors import KINDS, kind_named
from search.strategies import random_search
from supernet.checkpoint import load_checkpoint, load_supernet, trained_data
from supernet.errors import DRAWN_MAX, ArgumentParser, UserError, float_range, int_range, random_seed, run_cli
from supernet.family import config_from_dict, space_of
from supernet.io import atomic_serialize, refuse_folder, write_json
from supernet.outdir import claim_file
from supernet.sampler import flops_params_table, score
from supernet.schema import COUNT, NUMBER, TEXT, Each, Nullable, check_document

FORMAT = "oneshot-nas/predictor"
VERSION = 1
TARGET = "val_top1"
DEFAULT_EVALUATIONS = 1000
DEFAULT_HELD_OUT = 0.2
MIN_HELD_OUT, MIN_FITTED = 2, 3  # a Kendall tau needs two points; ridge's cross-validation three

# What a reader of a predictor file relies on, besides the space and state every such file has.
FIGURES = {"evaluations": COUNT, "fitted_on": COUNT, "held_out": COUNT,
           "held_out_top1": {"min": NUMBER, "max": NUMBER, "std": NUMBER},
           "models": Each({"kendall_tau": Nullable(NUMBER), "spearman_rho": Nullable(NUMBER), "rmse": NUMBER,
                           "fit_seconds": NUMBER}),
           "chosen": TEXT, "why": TEXT,
           "baselines": {"params": {"kendall_tau": Nullable(NUMBER)}, "fitted_mean": {"rmse": NUMBER}}}
PAYLOAD = {"kind": TEXT, "encoding": {"width": COUNT}, "checkpoint": {"path": TEXT, "sha256": TEXT},
           "figures": FIGURES}


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes: what ties a predictor to the checkpoint it was fitted for."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- the predictor -----------------------------------------------------------------------------------
@dataclass
class Predictor:
    """A fitted regressor with the space whose architectures it scores and the checkpoint it imitates."""

    space: Any
    model: Any  # one of search.regressors.KINDS
    checkpoint: dict[str, Any]  # path, sha256, classes
    figures: dict[str, Any]
    path: Path | None = None

    def predict(self, archs: Sequence[Mapping[str, Any]] | torch.Tensor) -> torch.Tensor:
        """Predicted validation top-1 (in [0, 1], float32 ``[N]``) of architecture dicts, or of int8 codes
        ``[N, K]`` as :func:`supernet.sampler.sample` draws them, in one batched call.

        Dicts are put in canonical form first (two dicts naming one network score alike); codes are taken as
        they are (mbv3: any code, inactive blocks are ignored; nb201: a raw cell, so pass dicts to merge
        isomorphic cells), which is what makes 100,000 codes a fraction of a second.
        """
        if isinstance(archs, torch.Tensor):
            x = features_from_codes(self.space.layout(), archs)
        else:
            x = features(self.space, archs)
        return self.model.predict(x)

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write the predictor atomically (readable with ``torch.load(weights_only=True)``); ``extra``: more
        plain fields (config, command)."""
        payload = {"format": FORMAT, "version": VERSION, "space": self.space.config.to_dict(),
                   "kind": self.model.kind, "state_dict": self.model.state(), "encoding": spec(self.space.layout()),
                   "checkpoint": self.checkpoint, "figures": self.figures, **extra}
        return atomic_serialize(path, lambda buffer: torch.save(payload, buffer))


def load_predictor(path: str | os.PathLike, space: Any = None,
                   checkpoint: str | os.PathLike | None = None) -> Predictor:
    """The predictor at ``path``; with ``space`` (a space or its config), one fitted for another space is
    refused in one line, and with ``checkpoint`` (a file), one fitted for another checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictor {path} does not exist; fit one with `python -m search.predictor fit "
                        "--checkpoint CKPT`")
    payload = load_checkpoint(path, FORMAT, what="predictor")
    remedy = "fit it again with `python -m search.predictor fit`"
    check_document(payload, PAYLOAD, f"predictor {path} is malformed", remedy)
    config = config_from_dict(payload["space"], f"predictor {path}")
    own = space_of(config)
    recorded = payload["checkpoint"]
    if space is not None:
        wanted = getattr(space, "config", space)
        if wanted.to_dict() != config.to_dict():
            other = "another configuration of space" if wanted.name == config.name else "space"
            raise UserError(f"predictor {path} was fitted for {other} {config.name!r} (checkpoint "
                            f"{recorded['path']}), not this {wanted.name!r}: fit one for this space's checkpoint "
                            "with `python -m search.predictor fit --checkpoint CKPT`")
    if checkpoint is not None:
        digest = file_sha256(checkpoint)
        if digest != recorded["sha256"]:
            raise UserError(f"predictor {path} was fitted for checkpoint {recorded['path']} (sha256 "
                            f"{recorded['sha256'][:12]}), not {checkpoint} ({digest[:12]}): fit one for it with "
                            f"`python -m search.predictor fit --checkpoint {checkpoint}`")
    if payload["encoding"]["width"] != width(own.layout()):
        raise UserError(f"predictor {path} encodes {payload['encoding']['width']} features, space "
                        f"{config.name!r} has {width(own.layout())}; {remedy}")
    try:
        model = kind_named(payload["kind"]).from_state(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise UserError(f"predictor {path} is malformed: its {payload['kind']} state does not load "
                        f"({type(err).__name__}); {remedy}") from None
    return Predictor(own, model, dict(recorded), payload["figures"], path)


# ---- fitting -------------------------------------------------------------------------------------------
@dataclass
class FitConfig:
    """The resolved settings of a ``fit``; saved with its figures."""

    checkpoint: str
    evaluations: int = DEFAULT_EVALUATIONS
    data: str = ""  # "": the dataset the supernet was trained on
    seed: int = 0
    held_out: float = DEFAULT_HELD_OUT
    calibration_size: int = DEFAULT_CALIBRATION
    threads: int = 0  # 0: torch's own
    stop_after: int = 0  # evaluate at most this many in this run, then stop (rerun to continue); 0: all
    out: str = ""  # "": beside the checkpoint


def split_sizes(evaluations: int, held_out: float) -> tuple[int, int]:
    """(fitted, held out) counts of ``evaluations``; a count too small for either is a one-line error."""
    held = max(MIN_HELD_OUT, round(held_out * evaluations))
    if evaluations - held < MIN_FITTED:
        raise UserError(f"--evaluations {evaluations} with --held-out {held_out:g} leaves {evaluations - held} "
                        f"to fit on and {held} to measure; at least {MIN_FITTED} and {MIN_HELD_OUT} "
                        f"are needed: raise --evaluations to {MIN_FITTED + held} or more")
    return evaluations - held, held


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """The files of a predictor at ``out`` (``X.pt`` or ``X``): ``X.pt``, ``X.json``, ``X.png`` and the
    evaluation journal ``X.journal.json``."""
    out = Path(out)
    stem = str(out.with_suffix("") if out.suffix == ".pt" else out)
    return {"predictor": out, "figures": Path(f"{stem}.json"), "scatter": Path(f"{stem}.png"),
            "journal": Path(f"{stem}.journal.json")}


def default_out(checkpoint: str) -> str:
    """``runs/x/final.pt`` -> ``runs/x/final.predictor.pt``: beside the checkpoint it was fitted for."""
    return str(Path(checkpoint).with_suffix(".predictor.pt"))


def _finite(value: float) -> float | None:
    """``value``, or None where it is NaN (a tau of points that are all tied): JSON has no NaN."""
    return None if math.isnan(value) else float(value)


def measure(predicted: torch.Tensor, measured: torch.Tensor) -> dict[str, float | None]:
    """Kendall's tau, Spearman's rho and the RMSE of ``predicted`` against ``measured``."""
    p, m = predicted.double().tolist(), measured.double().tolist()
    return {"kendall_tau": _finite(kendall_tau(p, m)), "spearman_rho": _finite(spearman_rho(p, m)),
            "rmse": float(((predicted.double() - measured.double()) ** 2).mean().sqrt())}


def choose(models: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """The kind with the highest held-out Kendall tau (then the lowest RMSE), and why, in words."""
    def rank(kind: str) -> tuple[float, float]:
        tau = models[kind]["kendall_tau"]
        return (-math.inf if tau is None else tau, -models[kind]["rmse"])

    best = max(models, key=rank)
    others = ", ".join(f"{k} {_tau_text(models[k])}" for k in models if k != best)
    if models[best]["kendall_tau"] is None:
        return best, (f"the held-out accuracies are all tied, so no kind has a Kendall tau: the lowest held-out "
                      f"RMSE ({models[best]['rmse']:.4f})")
    return best, f"the highest held-out Kendall tau ({_tau_text(models[best])}; {others or 'no other kind'})"


def _tau_text(figures: Mapping[str, Any]) -> str:
    tau = figures["kendall_tau"]
    return "no tau" if tau is None else f"{tau:.3f}"


def fit_models(x: torch.Tensor, y: torch.Tensor, fitted: torch.Tensor, held: torch.Tensor,
               seed: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Fit every regressor kind on rows ``fitted`` and measure it on rows ``held``: (models, figures,
    held-out predictions), each by kind."""
    models, figures, predictions = {}, {}, {}
    for kind in KINDS:
        start = time.perf_counter()
        model = kind.fit(x[fitted], y[fitted], seed)
        seconds = time.perf_counter() - start
        predictions[kind.kind] = model.predict(x[held])
        models[kind.kind] = model
        figures[kind.kind] = {**measure(predictions[kind.kind], y[held]), "fit_seconds": round(seconds, 3),
                              "settings": model.settings}
    return models, figures, predictions


def evaluate_archs(config: FitConfig, supernet: Any, meta: Mapping[str, Any], journal: Journal) -> list[Any]:
    """The records of the first ``config.evaluations`` seeded uniform draws (as many as this run may
    evaluate, with ``--stop-after``), evaluated or replayed from ``journal``."""
    splits = checkpoint_splits(config.data, meta, supernet.space.config, config.checkpoint)
    evaluator = SupernetEvaluator(supernet, splits, calibration_size=config.calibration_size)
    problem = Problem(supernet.space, evaluator, journal=journal)
    total = config.evaluations
    if config.stop_after:
        total = min(total, len(journal) + config.stop_after)
    # random_search's first n draws are the same whatever n is asked for: a stopped run's are a prefix
    return random_search(problem, evaluations=total, seed=config.seed)


def fit(config: FitConfig, command: Sequence[str], overwrite: bool = False) -> dict[str, Any] | None:
    """Evaluate, fit, choose, write; return the figures document (None where ``--stop-after`` stopped it)."""
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    supernet, meta = load_supernet(config.checkpoint)
    space = supernet.space
    config = dataclasses.replace(config, data=trained_data(meta, config.data),
                                 out=config.out or default_out(config.checkpoint))
    fitted_count, held_count = split_sizes(config.evaluations, config.held_out)
    paths = output_paths(config.out)
    digest = file_sha256(config.checkpoint)
    identity = {"what": "predictor evaluations", "checkpoint_sha256": digest, "space": space.config.to_dict(),
                "data": config.data, "calibration_size": config.calibration_size, "seed": config.seed,
                "draws": "Space.sample, distinct networks"}
    with contextlib.ExitStack() as claims:
        for role in ("predictor", "figures", "scatter"):
            claims.enter_context(claim_file(paths[role], what="predictor", overwrite=overwrite))
        journal = _journal(paths["journal"], identity, overwrite)
        if len(journal):
            print(f"resuming {paths['journal']}: {len(journal)} evaluations recorded are replayed, not redone",
                  file=sys.stderr)
        before = len(journal)
        history = evaluate_archs(config, supernet, meta, journal)
        evaluated_seconds = time.perf_counter() - started
        if len(history) < config.evaluations:
            print(f"stopped after {len(journal) - before} evaluations in this run ({len(history)} of "
                  f"{config.evaluations} done, in {paths['journal']}); rerun the same command to continue")
            return None
        result = _fit_and_write(config, space, history, paths, (fitted_count, held_count),
                                {"checkpoint": {"path": config.checkpoint, "sha256": digest,
                                                "classes": meta.get("classes")}, "command": list(command)})
        result["seconds"] = {"total": round(time.perf_counter() - started, 1),
                             "evaluating": round(evaluated_seconds, 1), "fresh_evaluations": len(journal) - before}
        write_json(paths["figures"], result)
    describe(result)
    print(f"wrote {paths['predictor']}, {paths['figures']} and {paths['scatter']}")
    return result


def _journal(path: Path, identity: Mapping[str, Any], overwrite: bool) -> Journal:
    """The evaluation journal at ``path``; with ``overwrite``, one of another fit (or unreadable) is removed.

    One of the same fit is kept even then: its evaluations are what evaluating again would give.
    """
    try:
        return Journal(path, identity)
    except UserError:
        if not overwrite:
            raise
        path.unlink()
        return Journal(path, identity)


def _fit_and_write(config: FitConfig, space: Any, history: Sequence[Any], paths: Mapping[str, Path],
                   counts: tuple[int, int], provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Split, fit every kind, choose one, write the predictor and the scatter; the figures document."""
    archs = [record.arch for record in history]
    y = torch.tensor([float(record.metrics[TARGET]) for record in history], dtype=torch.float64)
    x = features(space, archs)
    order = torch.randperm(len(archs), generator=torch.Generator().manual_seed(config.seed))
    fitted, held = order[:counts[0]], order[counts[0]:]
    models, figures, predictions = fit_models(x, y, fitted, held, config.seed)
    chosen, why = choose(figures)
    params = score(space, torch.tensor([space.to_codes(a) for a in archs], dtype=torch.int8),
                   flops_params_table(space.config))[:, 1]
    held_y = y[held]
    summary = {
        "target": TARGET, "evaluations": len(archs), "fitted_on": len(fitted), "held_out": len(held),
        "held_out_top1": {"min": float(held_y.min()), "max": float(held_y.max()),
                          "std": float(held_y.std(correction=0))},
        "models": figures, "chosen": chosen, "why": why,
        "note": "the kind is chosen on the held-out architectures, so its figures there are a little optimistic",
        "baselines": {"params": {"kendall_tau": _finite(kendall_tau(params[held].tolist(), held_y.tolist()))},
                      "fitted_mean": {"rmse": float(((held_y - y[fitted].mean()) ** 2).mean().sqrt())}},
    }
    predictor = Predictor(space, models[chosen], dict(provenance["checkpoint"]), summary)
    predictor.save(paths["predictor"], config=dataclasses.asdict(config), command=provenance["command"])
    title = (f"{space.name} accuracy predictor, {len(held)} held-out architectures\nKendall tau: "
             + ", ".join(f"{k} {_tau_text(f)}" for k, f in figures.items()))
    scatter_png(paths["scatter"], (100 * held_y).tolist(),
                {f"{k} (chosen)" if k == chosen else k: (100 * p.double()).tolist() for k, p in predictions.items()},
                title, quantity="validation top-1 (%)", band=None)
    points = [{"arch": space.to_string(archs[i]), TARGET: float(y[i]),
               "predicted": {k: float(p[n]) for k, p in predictions.items()}} for n, i in enumerate(held.tolist())]
    return {"format": "oneshot-nas/predictor-figures", "predictor": str(paths["predictor"]), "space": space.name,
            "encoding": spec(space.layout()), **provenance, **summary, "held_out_points": points,
            "config": dataclasses.asdict(config)}


def describe(figures: Mapping[str, Any]) -> None:
    """Print a predictor's figures: every kind's held-out Kendall tau, Spearman rho and RMSE, and the choice."""
    spread = figures["held_out_top1"]
    print(f"{figures['evaluations']} evaluated architectures: fitted on {figures['fitted_on']}, measured on "
          f"{figures['held_out']} held out (top-1 {100 * spread['min']:.2f} to {100 * spread['max']:.2f} %, "
          f"std {100 * spread['std']:.2f} pp)")
    print(f"  {'kind':<6} {'Kendall tau':>11} {'Spearman':>9} {'RMSE (pp)':>10} {'fit (s)':>8}")
    for kind, f in figures["models"].items():
        rho = "n/a" if f["spearman_rho"] is None else f"{f['spearman_rho']:.3f}"
        print(f"  {kind:<6} {_tau_text(f):>11} {rho:>9} {100 * f['rmse']:>10.3f} {f['fit_seconds']:>8.2f}"
              + ("   <- chosen" if kind == figures["chosen"] else ""))
    base = figures["baselines"]
    print(f"  yardsticks: parameter count alone ranks with Kendall tau {_tau_text(base['params'])}; predicting "
          f"the fitted mean has RMSE {100 * base['fitted_mean']['rmse']:.3f} pp")
    print(f"chosen: {figures['chosen']}, for {figures['why']}")


# ---- command line --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m search.predictor", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("fit", help="evaluate random subnets and fit a predictor of their accuracy",
                               description="Evaluate random subnets of a supernet and fit a predictor of their "
                                           "validation accuracy.")
    make.add_argument("--checkpoint", required=True, help="supernet checkpoint whose subnets' accuracy is learnt")
    make.add_argument("--evaluations", type=int_range(MIN_FITTED + MIN_HELD_OUT, DRAWN_MAX),
                      default=DEFAULT_EVALUATIONS, help="random architectures evaluated (about 2.5 s each for "
                                                        "the shipped supernet on one core)")
    make.add_argument("--data", default="", help="dataset folder (default: the one the supernet was trained on)")
    make.add_argument("--seed", type=random_seed, default=0,
                      help="seed of the architectures drawn, of the held-out split and of the fits")
    make.add_argument("--held-out", type=float_range(0.0, 1.0, above=True, below=True), default=DEFAULT_HELD_OUT,
                      help="share of the evaluated architectures held out to measure and choose the models")
    make.add_argument("--calibration-size", type=int_range(), default=DEFAULT_CALIBRATION,
                      help="training images used to recalibrate batch norm (as in the searches)")
    make.add_argument("--threads", type=int_range(0, 1024), default=0, help="torch threads (0: torch's own)")
    make.add_argument("--stop-after", type=int_range(0), default=0,
                      help="evaluate at most N architectures in this run, then stop; rerun to continue (0: all)")
    make.add_argument("--out", default=None,
                      help="predictor file; X.json, X.png and the journal X.journal.json go beside it "
                           "(default: beside the checkpoint, final.pt -> final.predictor.pt)")
    make.add_argument("--overwrite", action="store_true",
                      help="replace an existing predictor (its journal's evaluations are kept when they are this "
                           "fit's, removed otherwise)")
    show = commands.add_parser("show", help="print a predictor's figures", description="Print a predictor's figures.")
    show.add_argument("predictor", help="predictor file (X.predictor.pt)")
    args = parser.parse_args(argv)
    if args.command == "fit":
        if args.out:
            refuse_folder(args.out, "--out", Path(default_out(args.checkpoint)).name)
        split_sizes(args.evaluations, args.held_out)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.command == "show":
        predictor = load_predictor(args.predictor)
        print(f"predictor {predictor.path}: {predictor.model.kind} for space {predictor.space.name!r}, fitted for "
              f"checkpoint {predictor.checkpoint['path']} (sha256 {predictor.checkpoint['sha256'][:12]})")
        describe(predictor.figures)
        return predictor.figures
    config = FitConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FitConfig)
                          if f.name != "out"}, out=args.out or "")
    return fit(config, ["python", "-m", "search.predictor", *(sys.argv[1:] if argv is None else argv)],
               overwrite=args.overwrite)


if __name__ == "__main__":
    run_cli(main)
