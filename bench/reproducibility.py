"""Rerun and reorder check on real data: the issue's acceptance run, as a script.

    python bench/reproducibility.py --n 200 [--model M.gguf] [--workdir DIR]

Writes N Newsroom items (from ../shared/data) to a CSV and a shuffled copy, annotates each
into a fresh project with the real `annotator` command (Newsroom rubric, default model unless
--model), exports `results`, and prints: seconds per run, whether the two in-order runs gave
byte-identical results files, and how many labels differ between in-order and shuffled runs.
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.datasets import newsroom, write_csv

RUBRIC = (
    Path(__file__).resolve().parent.parent / "annotator" / "samples" / "newsroom" / "rubric.toml"
)


def annotate(data: Path, project: Path, out: Path, model: str | None) -> float:
    cmd = [
        sys.executable,
        "-m",
        "annotator",
        "annotate",
        str(data),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
    ] + (["--model", model] if model else [])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    subprocess.run(
        [sys.executable, "-m", "annotator", "results", str(project), "--out", str(out)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="repro-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = newsroom(args.n)
    in_order = work / "items.csv"
    write_csv(rows, ["id", "summary", "article"], in_order)
    shuffled_rows = list(rows)
    random.Random(0).shuffle(shuffled_rows)
    shuffled = work / "shuffled.csv"
    write_csv(shuffled_rows, ["id", "summary", "article"], shuffled)

    times = {}
    for name, data in (("first", in_order), ("rerun", in_order), ("shuffled", shuffled)):
        times[name] = annotate(data, work / f"{name}.db", work / f"results-{name}.csv", args.model)
        print(f"{name:9} {times[name]:7.1f} s  ({args.n / times[name]:.2f} items/s)", flush=True)

    identical = (work / "results-first.csv").read_bytes() == (
        work / "results-rerun.csv"
    ).read_bytes()
    first = {r["id"]: r for r in csv.DictReader((work / "results-first.csv").open())}
    other = {r["id"]: r for r in csv.DictReader((work / "results-shuffled.csv").open())}
    dims = [
        c
        for c in next(iter(first.values()))
        if c not in ("id", "truncated") and not c.endswith(("_p", "_margin"))
    ]
    labels = sum(1 for i in first for d in dims if first[i][d] != other[i][d])
    rows_same = sum(1 for i in first if first[i] == other[i])
    print(f"items {len(first)}; rerun results byte-identical: {identical}")
    print(
        f"shuffled: {labels} of {len(first) * len(dims)} labels differ; "
        f"{rows_same} of {len(first)} rows identical including probabilities"
    )
    print(f"files in {work}")
    sys.exit(0 if identical and labels == 0 else 1)


if __name__ == "__main__":
    main()
