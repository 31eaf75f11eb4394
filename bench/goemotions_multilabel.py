"""Multi-label GoEmotions: a `kind = "multi"` rubric end to end, with alpha on sets.

    python bench/goemotions_multilabel.py --n 40 --out runs/multilabel [--values ekman|all]

Through the `annotator` command (each command printed first):
  1. the first N dev comments that carry two or more emotions (GoEmotions' own multi-label
     items; the label is the set the dataset gives);
  2. `annotate` with a multi-label rubric: the 28 emotions (--values all), or the 6 Ekman
     groups plus neutral that the GoEmotions paper maps them to (--values ekman, the
     default: 7 yes/no decisions per comment instead of 28);
  3. the dataset's sets imported as one reviewer's labels (`review import`), then `agree`:
     Krippendorff's alpha with the MASI set distance, model against the dataset, with its
     95% bootstrap interval over comments;
  4. `calibrate`: a head per value fitted on the same reviews, its labels leave-one-out for
     every reviewed comment, and `agree` again on that run.
Also the share of comments whose set the model gets exactly, and the annotate throughput
against a baseline timed in the same run: the same comments with the same values as one
single-label (nominal) dimension, so the ratio is what deciding each value costs.
Figures go to OUT/multilabel.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets

# Demszky et al. 2020, the GoEmotions repository's ekman_mapping.json.
EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": [
        "joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism",
        "relief", "pride", "admiration", "desire", "caring",
    ],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
    "neutral": ["neutral"],
}  # fmt: skip


def multi_rows(n: int, values: str) -> tuple[list[dict], list[str]]:
    names = datasets.emotion_names()
    group = {e: g for g, members in EKMAN.items() for e in members}
    allowed = list(EKMAN) if values == "ekman" else names
    rows = []
    path = datasets.SHARED / "goemotions" / "dev.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        for text, labels, comment_id in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if "," not in labels:
                continue
            emotions = {names[int(i)] for i in labels.split(",")}
            chosen = {group[e] for e in emotions} if values == "ekman" else emotions
            rows.append({"id": comment_id, "text": text, "emotions": sorted(chosen)})
            if len(rows) >= n:
                break
    return rows, allowed


def rubric_toml(values: list[str]) -> str:
    shown = ", ".join(json.dumps(v) for v in values)
    return (
        'name = "goemotions-multi"\n'
        'instructions = "You will read a short Reddit comment. Say which emotions it '
        'expresses: any number of them."\n'
        '[[inputs]]\ncolumn = "text"\nlabel = "COMMENT"\n'
        '[[dimensions]]\nname = "emotions"\n'
        'question = "Which emotions does the comment express?"\n'
        f'kind = "multi"\nvalues = [{shown}]\nmin = 1\n'
    )


def command(*args: str) -> str:
    full = [sys.executable, "-m", "annotator", *args]
    print("$ annotator " + " ".join(args), flush=True)
    done = subprocess.run(full, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr)
    return done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--values", choices=["ekman", "all"], default="ekman")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--out", type=Path, default=Path("runs/multilabel"))
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rows, values = multi_rows(args.n, args.values)
    (out / "rubric.toml").write_text(rubric_toml(values))
    with (out / "items.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([r["id"], r["text"]] for r in rows)
    with (out / "gold.jsonl").open("w", encoding="utf-8") as handle:
        for r in rows:
            handle.write(json.dumps({"id": r["id"], "emotions": r["emotions"]}) + "\n")
    project = out / "p.db"
    project.unlink(missing_ok=True)
    started = time.time()
    command(
        "annotate", str(out / "items.csv"), "--rubric", str(out / "rubric.toml"),
        "--project", str(project), "--threads", args.threads, "--n-ctx", "2048",
    )  # fmt: skip
    seconds = time.time() - started
    single = out / "single"
    single.mkdir(exist_ok=True)
    (single / "rubric.toml").write_text(
        rubric_toml(values)
        .replace('kind = "multi"\n', 'scale = "nominal"\n')
        .replace("min = 1\n", "")
    )
    (single / "p.db").unlink(missing_ok=True)
    started = time.time()
    command(
        "annotate", str(out / "items.csv"), "--rubric", str(single / "rubric.toml"),
        "--project", str(single / "p.db"), "--threads", args.threads, "--n-ctx", "2048",
    )  # fmt: skip
    single_seconds = time.time() - started
    command("review", "import", str(project), str(out / "gold.jsonl"), "--reviewer", "goemotions")
    base = json.loads(_agree(project))
    command("results", str(project), "--out", str(out / "results.jsonl"))
    gold = {r["id"]: r["emotions"] for r in rows}
    got = [json.loads(line) for line in (out / "results.jsonl").open()]
    exact = sum(sorted(g["emotions"]) == gold[g["id"]] for g in got)
    command("calibrate", str(project))
    head = json.loads(_agree(project))
    figures = {
        "items": len(rows),
        "values": args.values,
        "n_values": len(values),
        "seconds_annotate": round(seconds, 1),
        "items_per_s": round(len(rows) / seconds, 3),
        "seconds_annotate_single_label": round(single_seconds, 1),
        "cost_vs_single_label": round(seconds / single_seconds, 2),
        "exact_sets_base": exact,
        "alpha_masi_base": _pair(base),
        "alpha_masi_head_loo": _pair(head),
    }
    (out / "multilabel.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


def _agree(project: Path) -> str:
    full = [sys.executable, "-m", "annotator", "agree", str(project), "--json"]
    print("$ annotator agree " + str(project) + " --json", flush=True)
    done = subprocess.run(full, capture_output=True, text=True, check=True)
    return done.stdout


def _pair(report: dict) -> dict:
    comparison = report["dimensions"][0]["comparisons"][0]
    return {k: comparison[k] for k in ("coders", "n", "alpha", "ci95", "level")}


if __name__ == "__main__":
    main()
