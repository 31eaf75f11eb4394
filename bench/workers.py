"""Throughput beyond one engine: processes and Ray actors on one project, whole commands timed.

    python bench/workers.py [--short 120] [--long 12] [--repeats 2] [--no-ray] [--json OUT]

Workloads as in bench/annotate.py: "short" (GoEmotions dev comments, one nominal dimension)
and "long" (Newsroom, one summary per article, four ordinal dimensions). Each configuration is
one real `annotator annotate` command on a fresh project, timed from start to exit (model
loads, Ray connection and actor start included):

  1x1      one process, --threads 1 (the unit for scaling efficiency)
  1x2      one process, --threads 2
  2x1      --workers 2 --threads 2: two engine processes with one thread each, one project
  2x1p4    the same with --parallel 4 (each engine decodes 4 items per llama.cpp batch)
  ray1     --ray ADDRESS --actors 1 --threads 1, on a head this script starts (`ray start`)
  ray2     --ray ADDRESS --actors 2 --threads 1

items/s = items / command seconds; scaling efficiency = items/s / (engines x threads x the
1x1 items/s), i.e. per core used. Labels of every configuration are compared with 1x1's, the
sequential engine (thread count does not change logits, so they must be identical; --parallel
may move a near tie). Every command must label each item once, in one run: its "N now" is
the labelling work done, so an item labelled twice (a lease that ran out) fails the bench. The
order of configurations rotates between repeats; figures are medians. The machine this was
written on is shared, so repeat and read the spread. Item text is never printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.annotate import load_workload, rubric_path  # noqa: E402

CONFIGS = {  # name: (extra arguments, engines x threads = cores used)
    "1x1": (["--threads", "1"], 1),
    "1x2": (["--threads", "2"], 2),
    "2x1": (["--workers", "2", "--threads", "2"], 2),
    "2x1p4": (["--workers", "2", "--threads", "2", "--parallel", "4"], 2),
    "ray1": (["--ray", "{ray}", "--actors", "1", "--threads", "1"], 1),
    "ray2": (["--ray", "{ray}", "--actors", "2", "--threads", "1"], 2),
}


def write_data(workload: str, n: int, folder: Path) -> Path:
    rubric, ids, items = load_workload(workload, n)
    columns = [inp.column for inp in rubric.inputs]
    path = folder / f"{workload}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *columns])
        writer.writerows(
            [i, *(item[c] for c in columns)] for i, item in zip(ids, items, strict=True)
        )
    return path


def labels_of(project: Path) -> dict[str, str]:
    db = sqlite3.connect(project)
    try:
        return {
            i: json.dumps({k: v[0] for k, v in json.loads(labels).items()})
            for i, labels in db.execute("SELECT item_id, labels FROM annotations")
        }
    finally:
        db.close()


def timed(
    config: str, data: Path, workload: str, folder: Path, ray: str | None, model: str
) -> tuple[float, dict[str, str]]:
    extra = [a.format(ray=ray) for a in CONFIGS[config][0]]
    project = folder / f"{workload}-{config}-{time.monotonic_ns()}.db"
    command = [
        sys.executable,
        "-m",
        "annotator",
        "annotate",
        str(data),
        "--rubric",
        str(rubric_path(workload)),
        "--project",
        str(project),
        "--model",
        model,
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{config} failed: {done.stderr.strip().splitlines()[-1:]}")
    labels = labels_of(project)
    now = re.search(r"\((\d+) now, ", done.stderr)
    db = sqlite3.connect(project)
    try:
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        db.close()
    if runs != 1 or not now or int(now[1]) != len(labels):
        raise SystemExit(
            f"{config}: {runs} runs, {now and now[1]} items labelled for "
            f"{len(labels)} stored: not each item once in one run"
        )
    return seconds, labels


def start_head(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway one-machine cluster
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            str(len(os.sched_getaffinity(0))),
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(folder / "ray"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(8)  # the head is up well before the first command connects
    return head, f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF model [default: the packaged Gemma 3 270M]")
    parser.add_argument("--short", type=int, default=120, help="GoEmotions dev items [120]")
    parser.add_argument("--long", type=int, default=12, help="Newsroom items [12]")
    parser.add_argument("--repeats", type=int, default=2, help="runs of everything; medians [2]")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated subset of {', '.join(CONFIGS)}",
    )
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray configurations")
    parser.add_argument("--json", type=Path, help="write every figure")
    args = parser.parse_args(argv)

    from annotator.modelfile import default_model_path

    model = str(Path(args.model) if args.model else default_model_path())
    configs = [c for c in args.configs.split(",") if not (args.no_ray and c.startswith("ray"))]
    sizes = {w: n for w, n in (("short", args.short), ("long", args.long)) if n > 0}
    seconds: dict[str, dict[str, list[float]]] = {w: {c: [] for c in configs} for w in sizes}
    differ: dict[str, dict[str, int]] = {w: dict.fromkeys(configs, 0) for w in sizes}
    print(
        f"model {Path(model).name}, {len(os.sched_getaffinity(0))} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start; medians of {args.repeats} run(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        folder = Path(tmp)
        head, ray = (
            start_head(folder) if any(c.startswith("ray") for c in configs) else (None, None)
        )
        try:
            for r in range(args.repeats):
                for workload, n in sizes.items():
                    data = write_data(workload, n, folder)
                    reference = None
                    order = configs[r % len(configs) :] + configs[: r % len(configs)]
                    results = {}
                    for config in order:
                        took, labels = timed(config, data, workload, folder, ray, model)
                        seconds[workload][config].append(took)
                        results[config] = labels
                        print(
                            f"  run {r + 1} {workload} {config}: {took:.1f} s",
                            file=sys.stderr,
                            flush=True,
                        )
                    reference = results.get("1x1") or next(iter(results.values()))
                    for config, labels in results.items():
                        assert len(labels) == n, f"{config}: {len(labels)} of {n} items"
                        differ[workload][config] += sum(
                            labels[i] != reference[i] for i in reference
                        )
        finally:
            if head is not None:
                os.killpg(head.pid, signal.SIGTERM)
                head.wait()
    report = {}
    for workload, n in sizes.items():
        med = {c: n / statistics.median(seconds[workload][c]) for c in configs}
        unit = med.get("1x1")
        print(f"\n{workload}: {n} items, whole commands")
        print(
            f"  {'config':7} {'items/s':>8} {'runs (s)':>18} {'efficiency':>10} {'vs 1x2':>7} "
            f"labels differing from 1x1"
        )
        for c in configs:
            runs = "/".join(f"{s:.1f}" for s in seconds[workload][c])
            eff = f"{med[c] / (CONFIGS[c][1] * unit):.2f}" if unit else "-"
            vs = f"{med[c] / med['1x2']:.2f}x" if "1x2" in med else "-"
            print(f"  {c:7} {med[c]:8.2f} {runs:>18} {eff:>10} {vs:>7} {differ[workload][c]}")
        if "2x1" in med and "2x1p4" in med:  # --parallel beside --workers: no wait on a lease
            ratios = [
                p / w
                for w, p in zip(seconds[workload]["2x1"], seconds[workload]["2x1p4"], strict=True)
            ]
            print("  2x1p4 / 2x1 seconds, run by run: " + ", ".join(f"{r:.2f}" for r in ratios))
        report[workload] = {
            "items": n,
            "seconds": seconds[workload],
            "items_per_s": med,
            "labels_differing": differ[workload],
        }
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
