"""Fine-tuning levers on USR Topical-Chat: base+head against LoRA, LoRA+head, on test dialogues.

    python bench/finetune_quality.py --out runs/finetune/usr-tc [--levers soft-ce,majority-ce]

The split is bench/rubric_quality.py's (seeded, by dialogue: 40 fit dialogues = 240 responses
with three raters each, 20 test dialogues = 120 responses never trained or fitted on). Every
step is an `annotator` command (printed first; a step whose output exists is skipped, so a
stopped run resumes):
  base   `annotate` every response with the embedded Gemma 3 270M (--rule argmax); import the
         raters' labels of the fit responses as reviews; `calibrate --out` fits the head
         (base+head) on them. With --head-dialogues below 40, a copy of the project holds
         only that subset's reviews: "base+head (subset)", fitted on the LoRA heads' items.
  LoRA   per lever (--target, --loss): `train` on the fit responses' ratings (one row per
         rater, --rater-column), `export --adapter`, then `annotate` the test responses and
         the fit responses (or --head-dialogues of them) through the adapter: its argmax on
         test is "LoRA argmax"; `calibrate --out` on the fit responses' reviews gives
         "LoRA+head" (the adapter file with the head, what a laptop would be sent).
Per lever, on the test responses: alpha(model, rater k) averaged over the three raters per
dimension, with a 95% bootstrap interval over responses; the mean over the six dimensions with
its interval and the interval of its difference from base+head (same resamples); n; the
distinct values given per dimension (collapse check); the minutes each command took; and a
fit-split estimate for choosing (never the test split): leave-one-out head labels on the fit
responses, or train's own validation alpha for a LoRA's argmax. Figures: OUT/levers.json and
OUT/levers.md (bench/lever_table.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, lever_table
from bench.rubric_quality import (
    RATERS,
    RUBRIC,
    annotate_argmax,
    calibrated_run,
    command,
    run_labels,
    split,
)

LEVERS = {  # name -> train options; the CPU recipe (--steps, --lr, ...) is added to each
    "soft-ce": ["--target", "soft", "--loss", "ce"],
    "majority-ce": ["--target", "majority", "--loss", "ce"],
    "soft-both": ["--target", "soft", "--loss", "both"],
    "soft-expected": ["--target", "soft", "--loss", "expected"],
    "majority-both": ["--target", "majority", "--loss", "both"],
}
INPUTS = ["id", "fact", "context", "response"]


def timed(minutes: dict, key: str, args: list[str], log: Path, allowed=(0,)) -> str:
    started = time.perf_counter()
    said = command(args, log, allowed)
    minutes[key] = round(minutes.get(key, 0.0) + (time.perf_counter() - started) / 60, 2)
    return said


def write_files(out: Path, fit: list[dict], test: list[dict], head_ids: set, dims: list[str]):
    datasets.write_csv(fit + test, INPUTS, out / "items.csv")
    datasets.write_csv(
        test + [r for r in fit if r["id"] in head_ids], INPUTS, out / "lora-items.csv"
    )
    rows = []
    for k, rater in enumerate(RATERS, start=1):
        mine = [{**r, "rater": rater, **{d: r[f"{d}_rater{k}"] for d in dims}} for r in fit]
        rows += mine
        datasets.write_csv(mine, ["id", *dims], out / f"{rater}.csv")
        subset = [r for r in mine if r["id"] in head_ids]
        datasets.write_csv(subset, ["id", *dims], out / f"{rater}-subset.csv")
    datasets.write_csv(rows, [*INPUTS, "rater", *dims], out / "fit-ratings.csv")


def import_reviews(project: Path, out: Path, suffix: str, log: Path) -> None:
    db = sqlite3.connect(project)
    (n,) = db.execute("SELECT count(*) FROM reviews").fetchone()
    db.close()
    if n == 0:
        for rater in RATERS:
            command(
                [
                    "review",
                    "import",
                    str(project),
                    str(out / f"{rater}{suffix}.csv"),
                    "--reviewer",
                    rater,
                ],
                log,
            )


def copy_db(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(target)
    src.backup(dst)
    src.close(), dst.close()
    from annotator.modelfile import default_model_path

    model = default_model_path()  # a cache made on another machine names its own copy of it
    with sqlite3.connect(target) as db:
        for run_id, path in db.execute("SELECT id, model_path FROM runs").fetchall():
            if not Path(path).exists() and Path(path).name == model.name:
                db.execute("UPDATE runs SET model_path = ? WHERE id = ?", (str(model), run_id))


def head(project: Path, shipped: Path, log: Path, minutes: dict) -> dict:
    db = sqlite3.connect(project)
    (last,) = db.execute("SELECT max(id) FROM runs").fetchone()
    db.close()
    if shipped.exists() and last > 1:  # fitted before on the same reviews (imported once)
        return run_labels(project, last)
    said = timed(
        minutes,
        "calibrate",
        ["calibrate", str(project), "--run", "1", "--rule", "median", "--out", str(shipped)],
        log,
    )
    return run_labels(project, calibrated_run(said))


def base_levers(args, out: Path, log: Path, report: dict) -> dict[str, dict]:
    folder = out / "base"
    folder.mkdir(exist_ok=True)
    project = folder / "project.db"
    minutes: dict = {}
    if not project.exists() and args.cache:
        copy_db(args.cache, project)  # a partial run of the same items: annotate resumes it
    annotate = annotate_argmax(out / "items.csv", project, "2048", args.threads)
    timed(minutes, "annotate (resumed)", annotate, log)
    subset = folder / "subset.db"  # the same run, only the head subset's reviews
    if 0 < args.head_dialogues < args.fit_dialogues:
        if not subset.exists():
            copy_db(project, subset)
        import_reviews(subset, out, "-subset", log)
    import_reviews(project, out, "", log)
    labels = {"base argmax": run_labels(project, 1)}
    labels["base+head"] = head(project, folder / "base-head.gguf", log, minutes)
    if 0 < args.head_dialogues < args.fit_dialogues:
        labels["base+head (subset)"] = head(subset, folder / "base-head-subset.gguf", log, {})
    model_s = lever_table.model_seconds(project, 1)
    report["costs"]["base"] = {"minutes": minutes, "annotate_s_per_item": model_s}
    return labels


def wait_for_training(run_dir: Path, stale_s: float = 3600) -> None:
    """A run another process is still training (its train.log grows): wait for its merged/."""
    log = run_dir / "train.log"
    while log.exists() and not (run_dir / "merged").is_dir():
        if time.time() - log.stat().st_mtime > stale_s:
            return
        time.sleep(20)


def lora_lever(name: str, args, out: Path, log: Path, report: dict) -> dict[str, dict]:
    folder = out / name
    folder.mkdir(exist_ok=True)
    run_dir, adapter = folder / "run", folder / "adapter.gguf"
    minutes: dict = {}
    wait_for_training(run_dir)
    if not (run_dir / "merged").is_dir():
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an unfinished run: start it again
        timed(
            minutes,
            "train",
            [
                "train",
                "--data",
                str(out / "fit-ratings.csv"),
                "--rater-column",
                "rater",
                "--rubric",
                str(RUBRIC),
                "--out",
                str(run_dir),
                *LEVERS[name],
                *recipe(args),
            ],
            log,
            allowed=(0, 1),  # 1: train called the kept adapter collapsed; a lever to measure
        )
    if not (run_dir / "merged").is_dir():
        sys.exit(f"train wrote no {run_dir / 'merged'}: see {log}")
    done = re.search(r"done in (\d+) s", (run_dir / "train.log").read_text())
    if done:  # train's own timing, also for a run trained before
        minutes["train"] = round(int(done.group(1)) / 60, 2)
    if not adapter.exists() and (run_dir / "adapter.gguf").exists():
        shutil.copyfile(run_dir / "adapter.gguf", adapter)  # train's calibrated step exported it
    if not adapter.exists():
        check = folder / "check.jsonl"  # a few validation items: the drift check is not the
        lines = (run_dir / "validation.jsonl").read_text().splitlines()  # measurement here
        check.write_text("\n".join(lines[: args.check_items]) + "\n")
        timed(
            minutes,
            "export",
            [
                "export",
                str(run_dir / "merged"),
                "--adapter",
                "--out",
                str(adapter),
                "--check",
                str(check),
                "--min-agreement",
                "0",
                "--bootstrap",
                "0",
                "--n-ctx",
                "2048",
                "--threads",
                args.threads,
                "--force",
            ],
            log,
            allowed=(0, 1),  # 1: the drift check refused the file; measured all the same
        )
    rejected = adapter.with_name(adapter.name + ".rejected")
    if not adapter.exists() and rejected.exists():
        shutil.copyfile(rejected, adapter)  # measured all the same; the table says so
    if not adapter.exists():
        sys.exit(f"export wrote no {adapter}: see {log}")
    project = folder / "project.db"
    extra = ("--model", str(adapter), "--workers", str(args.workers))
    annotate = annotate_argmax(out / "lora-items.csv", project, "2048", args.threads, *extra)
    timed(minutes, "annotate", annotate, log)
    labels = {f"LoRA {name} argmax": run_labels(project, 1)}
    if args.head_dialogues > 0:  # 0: argmax only (the test responses alone go through it)
        import_reviews(project, out, "-subset", log)
        labels[f"LoRA {name}+head"] = head(project, folder / "lora-head.gguf", log, minutes)
    previous = report["costs"].get(name, {}).get("minutes", {})
    report["costs"][name] = {
        "export_refused": rejected.exists(),  # the file measured is the one refused
        "minutes": {  # a resumed step takes less: keep the longest (the real one)
            k: max(v for v in (minutes.get(k), previous.get(k)) if v is not None)
            for k in {*minutes, *previous}
        },
        "annotate_s_per_item": lever_table.model_seconds(project, 1),
        "train_validation": lever_table.train_validation(run_dir),
    }
    return labels


def recipe(args) -> list[str]:
    return ["--max-steps", str(args.steps), "--batch-size", str(args.batch),
            "--micro-batch-size", str(min(args.batch, 4)), "--lr", str(args.lr),
            "--lora-r", str(args.rank), "--lora-alpha", str(2 * args.rank),
            "--max-tokens", str(args.max_tokens), "--val-fraction", str(args.val_fraction),
            "--no-eval-before", "--threads", args.threads, "--seed", str(args.seed),
            "--device", args.device, "--quantize", args.quantize]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="working folder (reused)")
    parser.add_argument(
        "--levers",
        default="soft-ce,majority-ce,soft-both",
        help=f"LoRA levers, in order, from: {', '.join(LEVERS)}",
    )
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per LoRA")
    parser.add_argument("--batch", type=int, default=8, help="examples per optimizer step")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--max-tokens", type=int, default=512, help="training sequence cut")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="train's validation")
    parser.add_argument(
        "--head-dialogues",
        type=int,
        default=None,
        help="fit dialogues annotated through each adapter for its head [all 40]; fewer "
        "also adds a base head fitted on the same subset; 0: no LoRA head",
    )
    parser.add_argument("--check-items", type=int, default=6, help="export's drift check items")
    parser.add_argument("--device", default="auto", help="train --device")
    parser.add_argument("--quantize", default="auto", help="train --quantize (GPU: nf4|none)")
    parser.add_argument("--threads", default="2")
    parser.add_argument(
        "--workers", type=int, default=2, help="annotate --workers through each adapter"
    )
    parser.add_argument("--test", type=int, default=20, help="held-out dialogues")
    parser.add_argument("--cache", type=Path, help="a partial base project of these items")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3407)
    args = parser.parse_args()  # fmt: skip

    from annotator.rubric import load_rubric

    rubric = load_rubric(RUBRIC)
    dims = [d.name for d in rubric.dimensions]
    fit, test = split(datasets.usr_topical_chat(), args.test, args.seed)
    fit_dialogues = sorted({r["dialogue"] for r in fit})
    args.fit_dialogues = len(fit_dialogues)
    if args.head_dialogues is None or args.head_dialogues > len(fit_dialogues):
        args.head_dialogues = len(fit_dialogues)
    random.Random(args.seed).shuffle(fit_dialogues)
    head_dialogues = set(fit_dialogues[: args.head_dialogues])
    head_ids = {r["id"] for r in fit if r["dialogue"] in head_dialogues}
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_files(out, fit, test, head_ids, dims)
    log = out / "commands.log"
    saved = out / "levers.json"
    report = json.loads(saved.read_text()) if saved.exists() else {"costs": {}}
    report.update(
        task="usr-tc", fit_items=len(fit), test_items=len(test), head_items=len(head_ids),
        recipe=dict(steps=args.steps, batch=args.batch, lr=args.lr, rank=args.rank,
                    max_tokens=args.max_tokens, val_fraction=args.val_fraction,
                    device=args.device, quantize=args.quantize, threads=args.threads),
        command=" ".join(sys.argv),
    )  # fmt: skip
    labels = base_levers(args, out, log, report)
    for name in [n for n in args.levers.split(",") if n]:
        if name not in LEVERS:
            sys.exit(f"--levers: unknown lever {name!r} (known: {', '.join(LEVERS)})")
        labels.update(lora_lever(name, args, out, log, report))
        write(report, labels, rubric, fit, test, head_ids, out, args.bootstrap)
    write(report, labels, rubric, fit, test, head_ids, out, args.bootstrap)


def write(report, labels, rubric, fit, test, head_ids, out: Path, bootstrap: int) -> None:
    report["levers"] = lever_table.measure(rubric, labels, fit, test, head_ids, bootstrap)
    (out / "levers.json").write_text(json.dumps(report, indent=1))
    table = lever_table.format_table(report)
    (out / "levers.md").write_text(table)
    print(table, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
