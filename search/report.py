"""A Markdown report of a search a person can read: ``python -m search.report RESULTS.json``.

It gathers what the search and the work after it wrote: the Pareto front (plot and table), the winner of each
scenario, every verified candidate's predicted against measured latency (table and scatter plot), and the
results of ``search.retrain`` and ``search.ensemble`` runs. Those are found in the results' folder and its
subfolders (``*/retrain.json``, ``*/ensemble.json``) or named with ``--retrain`` / ``--ensemble``. Pictures
are written beside the report and linked relatively, so the folder can be moved or published as it is.

The report's first line, an HTML comment Markdown does not show, names the results it was made from: a report
of the same results is rewritten, any other existing ``--out`` file is refused unless ``--overwrite``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from search.plot import plot_search, scatter_png
from search.ensemble import RESULTS_SCHEMA as ENSEMBLE_SCHEMA
from search.retrain import RESULTS_SCHEMA as RETRAIN_SCHEMA
from search.run import read_results
from supernet.errors import ArgumentParser, run_cli
from supernet.io import atomic_write, is_folder, read_json, refuse_folder
from supernet.outdir import check_regular, claim_file
from supernet.schema import check_document


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def code(arch: str) -> str:
    """An architecture string as inline code in a table cell (its ``|`` would otherwise split the cell)."""
    return "`" + arch.replace("|", "\\|") + "`"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def find_runs(folder: Path, name: str, named: Sequence[str], schema: Any) -> list[tuple[Path, dict[str, Any]]]:
    """``name`` files (retrain.json, ensemble.json) in ``folder``'s subfolders, plus the ``named`` ones, each
    checked against the ``schema`` of what this report reads from it."""
    paths = sorted(folder.glob(f"*/{name}")) + [Path(p) / name if is_folder(Path(p)) else Path(p) for p in named]
    what = name.removesuffix(".json") + " results"
    seen: dict[Path, dict[str, Any]] = {}
    for path in paths:
        if path.resolve() not in seen:
            seen[path.resolve()] = read_json(path, what)
            check_document(seen[path.resolve()], schema, f"{what} {path} are malformed",
                           f"rerun that {name.removesuffix('.json')} or leave the file out")
    return list(seen.items())


def link(target: str | os.PathLike, base: Path) -> str:
    return os.path.relpath(Path(target).resolve(), base.resolve())


def search_section(results: dict[str, Any], out: Path, base: Path) -> list[str]:
    metric = results["latency_metric"]
    history = {r["arch_string"]: r for r in results["history"]}
    config = results.get("config", {})
    plot = plot_search(results, out / "search.png")
    front = sorted((history[k] for k in results["pareto_front"] if k in history), key=lambda r: r["metrics"][metric])
    lines = [
        f"- command: `{' '.join(results.get('command') or ['?'])}`",
        f"- algorithm: {config.get('algorithm', '?')}, {results.get('evaluations', len(history))} architectures "
        f"evaluated, seed {config.get('seed', '?')}",
        f"- supernet: `{results.get('checkpoint', {}).get('path', config.get('checkpoint', '?'))}`",
    ]
    if "predicted_top1" in results.get("figures", {}):  # a guided search: say which accuracies are whose
        lines.append(f"- accuracy: the search ranked by predicted top-1 ({results['figures']['predicted_top1']}); "
                     f"the {len(history)} best were evaluated by the supernet, and every val top-1 below is the "
                     "supernet's")
    for device, t in results.get("tables", {}).items():
        fp = t.get("fingerprint", {})
        what = fp.get("gpu") or fp.get("cpu") or device
        lines.append(f"- latency table for {device}: {what}, batch {fp.get('batch_size', '?')}, "
                     f"{fp.get('threads', '?')} thread(s), {fp.get('runtime', '?')} (`{t.get('path')}`)")
    lines += ["", "## Accuracy against latency", "", f"![accuracy against latency]({link(plot, base)})", "",
              f"Pareto front ({len(front)} architectures, validation top-1 against predicted {metric}):", "",
              table(["architecture", "val top-1", "predicted latency", "MFLOPs", "params (M)"],
                    [(code(r["arch_string"]), pct(r["metrics"]["val_top1"]), ms(r["metrics"][metric]),
                      f"{r['metrics'].get('flops', 0) / 1e6:.1f}", f"{r['metrics'].get('params', 0) / 1e6:.3f}")
                     for r in front])]
    lines += ["", "## Winners", "",
              table(["scenario", "architecture", "val top-1", "predicted", "measured", "budget", "verdict"],
                    [(name, code(w["arch_string"]), pct(w["metrics"]["val_top1"]), ms(w["predicted_latency_ms"]),
                      ms(w["measured_latency_ms"]), ms(w["budget_ms"]),
                      "meets the budget" if w["meets_budget"] else "**over the budget when measured**")
                     for name, w in results["winners"].items()])]
    verified = [(name, v) for name, w in results["winners"].items() for v in w.get("verified", [])]
    if verified:
        measured = [v["measured_latency_ms"] for _, v in verified]
        predicted = [v["predicted_latency_ms"] for _, v in verified]
        errors = [abs(p - m) / m for p, m in zip(predicted, measured)]
        single = len(verified) == 1  # the first candidate met the budget: one point, not a fit
        title = ("one verified candidate (the first met its budget): one point, not a spread" if single else
                 f"{len(verified)} verified candidates: predicted against measured")
        scatter = scatter_png(out / "latency.png", measured, {"latency table": predicted}, title)
        summary = (f"Only the winner was timed end to end (the first candidate met its budget), so this is one "
                   f"point: its table error is {100 * errors[0]:.1f}%. `python -m search.latency validate` times 100 "
                   "subnets for the table's real spread." if single else
                   f"The best candidates of each scenario were timed end to end as the table was. Mean absolute "
                   f"error {100 * sum(errors) / len(errors):.1f}%, largest {100 * max(errors):.1f}%.")
        lines += ["", "## Predicted against measured latency", "", summary, "",
                  f"![predicted against measured latency]({link(scatter, base)})", "",
                  table(["scenario", "architecture", "val top-1", "predicted", "measured", "error", "within budget"],
                        [(name, code(v["arch_string"]), pct(v["metrics"]["val_top1"]), ms(v["predicted_latency_ms"]),
                          ms(v["measured_latency_ms"]),
                          f"{100 * (v['predicted_latency_ms'] - v['measured_latency_ms']) / v['measured_latency_ms']:+.1f}%",
                          "yes" if v["meets_budget"] else "no") for name, v in verified])]
    return lines


def retrain_section(runs: list[tuple[Path, dict[str, Any]]], base: Path) -> list[str]:
    lines = ["", "## Retrained", ""]
    if not runs:
        return lines + ["No `search.retrain` run found next to these results (pass `--retrain DIR`)."]
    rows = []
    for path, r in runs:
        m, test, latency = r["metrics"], r["metrics"]["test"], r["latency"]
        before = pct(m["val_top1_before"]) + " → " if m.get("val_top1_before") is not None else ""
        rows.append((code(r["arch"]), f"{r['mode']}, {r['config']['epochs']} ep", before + pct(m["val_top1"]),
                     pct(test["top1"]), f"{test['macro_precision']:.3f} / {test['macro_recall']:.3f} / "
                     f"{test['macro_f1']:.3f}", f"{ms(latency['median_ms'])} ({latency['device']})",
                     f"{r['flops'] / 1e6:.1f}", f"{r['params'] / 1e6:.3f}", f"[json]({link(path, base)})"))
    lines.append(table(["architecture", "mode", "val top-1", "test top-1", "macro P / R / F1", "measured latency",
                        "MFLOPs", "params (M)", "details"], rows))
    for path, r in runs:
        confusion = Path(r.get("files", {}).get("confusion", ""))
        if confusion.name and confusion.exists():
            lines += ["", f"Confusion matrix of `{r['arch']}` ({r['mode']}), test split:", "",
                      f"![confusion matrix]({link(confusion, base)})"]
    return lines


def ensemble_section(runs: list[tuple[Path, dict[str, Any]]], base: Path) -> list[str]:
    if not runs:
        return []
    rows = []
    for path, e in runs:
        ens, best = e["ensemble"], e["best_member"]
        rows.append((ms(e["budget_ms"]), "<br>".join(code(m["arch"]) for m in e["members"]), pct(ens["val_top1"]),
                     pct(ens["test_top1"]), ms(ens.get("measured_latency_ms")), pct(best["test_top1"]),
                     ms(best.get("measured_latency_ms")), f"{100 * e['gain_test_top1']:+.2f} points",
                     f"[json]({link(path, base)})"))
    return ["", "## Ensembles", "", "Members picked from the Pareto front under a total latency budget on the "
            "validation split; the best member is the most accurate single front member within the same budget.",
            "", table(["budget", "members", "val top-1", "test top-1", "measured", "best member test top-1",
                       "best member measured", "gain", "details"], rows)]


def signature(results_path: Path) -> str:
    """The first line of a report of ``results_path``: says which results it was made from."""
    return f"<!-- python -m search.report {results_path.resolve()} -->"


def is_report_of(out: Path, results_path: Path) -> bool:
    """Whether ``out`` is a report this command wrote of ``results_path`` (it may be rewritten)."""
    try:
        with open(out, encoding="utf-8", errors="replace") as handle:
            return handle.readline().rstrip("\n") == signature(results_path)
    except OSError:
        return False


def write_report(results_path: Path, out: Path, retrain: Sequence[str] = (), ensemble: Sequence[str] = ()) -> Path:
    """Write the report of ``results_path`` to ``out`` (Markdown) with its pictures beside it."""
    results = read_results(results_path)  # every input is read and checked before any picture is drawn
    retrained = find_runs(results_path.parent, "retrain.json", retrain, RETRAIN_SCHEMA)
    ensembles = find_runs(results_path.parent, "ensemble.json", ensemble, ENSEMBLE_SCHEMA)
    folder = out.parent
    lines = [signature(results_path), f"# Search report: {', '.join(results['winners'])}", ""]
    lines += search_section(results, folder, folder)
    lines += retrain_section(retrained, folder)
    lines += ensemble_section(ensembles, folder)
    text = "\n".join(lines) + "\n"
    return atomic_write(out, lambda tmp: tmp.write_text(text))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m search.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json of python -m search.evolve or search.bo")
    parser.add_argument("--retrain", action="append", default=[], help="a search.retrain folder or retrain.json "
                        "(repeatable; those in the results' subfolders are found anyway)")
    parser.add_argument("--ensemble", action="append", default=[], help="a search.ensemble folder or ensemble.json")
    parser.add_argument("--out", default=None, help="Markdown file to write (default: report.md beside the results)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file that is not a report of these results")
    args = parser.parse_args(argv)
    results = Path(args.results)
    out = refuse_folder(args.out, "--out", "report.md") if args.out else results.parent / "report.md"
    check_regular(out, "the report file")  # before reading its first line: a FIFO would block
    with claim_file(out, what="report", overwrite=args.overwrite, may_replace=is_report_of(out, results)):
        path = write_report(results, out, args.retrain, args.ensemble)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
