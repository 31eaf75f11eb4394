"""Calibrating from the app: `annotator calibrate` on the project's reviews, and the new run's
alpha beside the old one's (screens/calibrate.py shows it). No Textual here.

`calibrate_project` runs in a worker thread with its own store connection. It calls the same
`annotator.calibration.calibrate.calibrate` as the command, with two differences: the new run
is not made the project's current run (the reviewer adopts it, `Store.adopt_run`), and a
calibration without any head is refused before anything is stored (it would only repeat the
run's own readout). Both runs' alphas come from `agreement_report`, as on the Agreement tab:
on the new run the reviewed items carry leave-one-out (nominal: out-of-fold) labels, so its
alpha is out-of-fold too. `write_file` is `calibrate --out`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from annotator.agreement import verdict
from annotator.calibration.calibrate import CalibrationResult, calibrate
from annotator.dashboard import Cell
from annotator.errors import AnnotatorError
from annotator.project.reviews import agreement_report, unbiased_labels
from annotator.project.store import Store

WIDTH = 74  # inside the border and padding of an 80-column screen
NO_REVIEWS = (
    "no audit or imported reviews yet: review the audit sample in the Review tab (r), "
    "then calibrate"
)


@dataclass
class Outcome:
    result: CalibrationResult
    old: dict  # agreement report of the run calibrated
    new: dict  # of the new run


def calibrate_project(
    project: Path, run_id: int | None, bootstrap: int, tell: Callable[[str], None]
) -> Outcome:
    """Fit heads on the project's audit and imported reviews for run `run_id` (None: the
    current run), store the new run without adopting it, and both runs' agreement reports.
    `tell` hears each step; what it raises stops here (nothing stored before the last
    calibration step, see `calibrate`)."""
    with Store(project) as store:
        if not unbiased_labels(store.reviews()):
            raise AnnotatorError(NO_REVIEWS)
        result = calibrate(store, run_id, adopt=False, require_head=True, progress=tell)
        tell(f"alpha of run {result.parent} against the reviewers")
        old = agreement_report(store, result.parent, bootstrap=bootstrap)
        tell(f"alpha of run {result.run_id} against the reviewers")
        new = agreement_report(store, result.run_id, bootstrap=bootstrap)
    return Outcome(result, old, new)


def _alpha(value: float | None) -> Cell:
    return ("-" if value is None else f"{value:.2f}", verdict(value))


def _interval(ci: list) -> Cell:
    low, high = ci
    return ("-" if low is None or high is None else f"[{low:.2f}, {high:.2f}]", "")


def comparison(outcome: Outcome) -> tuple[list[Cell], list[list[Cell]]]:
    """(header, rows): per dimension, items compared, each run's mean alpha against the
    reviewers with its 95% interval, and the reviewed items the head was fitted on."""
    result = outcome.result
    old = {d["dimension"]: d["ceiling"] for d in outcome.old["dimensions"]}
    rows = []
    for entry in outcome.new["dimensions"]:
        name, new = entry["dimension"], entry["ceiling"]
        before = old[name]
        fitted = result.fitted.get(name)
        rows.append(
            [
                (name, ""),
                (str(new["n"]), ""),
                _alpha(before["model"]),
                _interval(before["ci95"]),
                _alpha(new["model"]),
                _interval(new["ci95"]),
                ("none" if fitted is None else str(fitted), ""),
            ]
        )
    head = ["dimension", "n", f"run {result.parent}", "95% CI", f"run {result.run_id}", "95% CI"]
    header = [(text, "") for text in [*head, "head"]]
    return _aligned(header, rows)


def _aligned(header: list[Cell], rows: list[list[Cell]]) -> tuple[list[Cell], list[list[Cell]]]:
    """Columns as wide as their content, two spaces apart; numbers on the right; the name
    cut (with an ellipsis) where the line would pass WIDTH."""
    table = [header, *rows]
    widths = [max(len(row[k][0]) for row in table) for k in range(len(header))]
    widths[0] = max(8, min(widths[0], WIDTH - sum(widths[1:]) - 2 * (len(widths) - 1)))

    def line(cells: list[Cell]) -> list[Cell]:
        out: list[Cell] = []
        for k, (text, style) in enumerate(cells):
            if len(text) > widths[k]:
                text = text[: widths[k] - 1] + "…"
            right = k in (1, 2, 4)
            last = k == len(cells) - 1
            text = text.rjust(widths[k]) if right else text if last else text.ljust(widths[k])
            out += [(text, style)] + ([] if last else [("  ", "")])
        return out

    return line(header), [line(row) for row in rows]


def write_file(project: Path, run_id: int, outcome: Outcome, out: Path) -> tuple[str, int, str]:
    """`calibrate --out` for the new run: (what was written, its size in bytes, its sha256).
    The run's model file must be where the run found it, with the same sha256."""
    from annotator.calibration.headfile import run_model_file, write_model_with_head
    from annotator.modelfile import sha256_file

    head = outcome.result.head
    if head is None:
        raise AnnotatorError("no dimension had enough reviewed items for a head; nothing to write")
    with Store(project) as store:
        run = store.run(run_id)
        source = run_model_file(store, run)
        kind = write_model_with_head(store, run, head, out, source)
    return kind, out.stat().st_size, sha256_file(out)


def check_out_path(answer: str) -> str | None:
    """The ask screen's check of the file to write: a problem, or None."""
    if not answer:
        return "type a file name"
    path = Path(answer).expanduser()
    if path.exists():
        return f"{answer} exists: choose another name (nothing is overwritten)"
    if not path.parent.is_dir():
        return f"{path.parent}: no such folder"
    return None
