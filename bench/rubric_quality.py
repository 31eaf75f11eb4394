"""Rubric quality on USR Topical-Chat: every readout lever against three human raters.

    python bench/quality.py usr-tc --out runs/quality/usr-tc

What it does, all through the `annotator` command (each command is printed first):
  1. splits the 60 dialogues (seeded) into fit and test dialogues: all six responses of a
     dialogue on one side, never split;
  2. `annotate` labels every response once with the embedded Gemma 3 270M (argmax), which
     stores each value's probability and the hidden state at each answer;
  3. imports the three raters' labels of the FIT responses as reviews (rater1..3);
  4. `calibrate` reads run 1 out again, without the model, once per lever:
       argmax / median           decision rules (median is `--rule auto` on ordinal scales)
       content-free + rule       the prior from items with no content (computed by the run)
       batch + rule              the prior from the run's own items
       head                      a ridge head on the hidden states fitted on the fit
                                 responses' reviews (`calibrate --out` writes it into a head
                                 file of a few kB that runs on the embedded model);
  5. the shipped configuration: `annotate` the TEST responses in a new project with that one
     file (its head, on the embedded base Q4_K_M), as a field laptop would, and checks its labels equal the
     head's labels for the same responses in step 4.
Then, on the test responses only, per dimension: the human ceiling (mean pairwise alpha
between the three rater slots, and all three at once) and, per coder, alpha(model, rater)
for each rater, averaged, with a 95% bootstrap interval over responses; and Spearman's rho
between each coder's overall score (probability-weighted mean, or the head's score) and the
raters' mean. Figures go to OUT/quality.json and OUT/quality.md.
"""

from __future__ import annotations

import json
import random
import shlex
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from bench import datasets

ROOT = Path(__file__).resolve().parent.parent
RUBRIC = ROOT / "bench" / "rubrics" / "usr_topical_chat.toml"
RATERS = ("rater1", "rater2", "rater3")
LEVERS = {  # coder name -> calibrate options (no head)
    "base argmax": ["--rule", "argmax", "--prior", "none"],
    "base median": ["--rule", "median", "--prior", "none"],
    "base mean": ["--rule", "mean", "--prior", "none"],
    "content-free argmax": ["--rule", "argmax", "--prior", "content-free"],
    "content-free median": ["--rule", "median", "--prior", "content-free"],
    "batch argmax": ["--rule", "argmax", "--prior", "batch"],
    "batch median": ["--rule", "median", "--prior", "batch"],
}


def split(rows: list[dict], test_dialogues: int, seed: int) -> tuple[list[dict], list[dict]]:
    dialogues = sorted({r["dialogue"] for r in rows})
    random.Random(seed).shuffle(dialogues)
    held = set(dialogues[:test_dialogues])
    return [r for r in rows if r["dialogue"] not in held], [
        r for r in rows if r["dialogue"] in held
    ]


def command(args: list[str], log: Path, allowed: tuple[int, ...] = (0,)) -> str:
    """Run `annotator ARGS`, logged; exit the bench unless its status is one of `allowed`."""
    cmd = [sys.executable, "-m", "annotator", *args]
    print("$ annotator " + shlex.join(args), flush=True)
    started = time.perf_counter()
    import subprocess

    done = subprocess.run(cmd, capture_output=True, text=True)
    with log.open("a") as handle:
        handle.write("$ " + shlex.join(args) + "\n" + done.stdout + done.stderr)
    print(f"  exit {done.returncode} in {time.perf_counter() - started:.0f} s", flush=True)
    if done.returncode not in allowed:
        sys.exit(f"annotator {args[0]} failed: see {log}\n{done.stderr[-2000:]}")
    return done.stderr


def annotate_argmax(items: Path, project: Path, n_ctx: str, threads: str, *extra: str) -> list[str]:
    """`annotate` arguments: ITEMS into PROJECT with the bench's rubric and the argmax rule (the
    stored distributions and states are what every lever reads), then `extra` options."""
    return [
        *("annotate", str(items), "--rubric", str(RUBRIC), "--project", str(project)),
        *("--rule", "argmax", "--n-ctx", n_ctx, "--threads", threads, *extra),
    ]


def run_labels(project: Path, run_id: int) -> dict[str, dict]:
    """item id -> (dimension -> (value, probs, hidden row)) of a run, read from the project."""
    db = sqlite3.connect(project)
    found = {}
    for item_id, labels, probs in db.execute(
        "SELECT item_id, labels, probs FROM annotations WHERE run_id = ?", (run_id,)
    ):
        labels, probs = json.loads(labels), json.loads(probs)
        found[item_id] = {d: (v[0], probs[d]) for d, v in labels.items()}
    db.close()
    return found


def calibrated_run(stderr: str) -> int:
    """The run `annotator calibrate` made or reused ("run N from run M: ...")."""
    import re

    found = re.search(r"^run (\d+) from run \d+", stderr, re.MULTILINE)
    assert found, stderr
    return int(found.group(1))


def head_scores(project: Path, model: Path, dim_name: str) -> dict[str, float]:
    """The head's continuous score per item (for Spearman): the head the model file carries,
    on the hidden states run 1 stored."""
    from annotator.calibration.heads import head_from_json
    from annotator.modelfile import KEY_CALIBRATION, read_model_info

    info = read_model_info(model)
    head = head_from_json(info.metadata[KEY_CALIBRATION], str(model), info.rubric)
    assert info.rubric is not None
    db = sqlite3.connect(project)
    rows = db.execute("SELECT item_id, hidden FROM annotations WHERE run_id = 1").fetchall()
    db.close()
    n_dims = len(info.rubric.dimensions)
    return {
        item_id: head.dims[dim_name].score(np.frombuffer(hidden, dtype="<f2").reshape(n_dims, -1))
        for item_id, hidden in rows
    }


def mean_rater_alpha(dim, model: list, raters: list[list], bootstrap: int, seed: int = 0) -> dict:
    """alpha(model, rater k) averaged over the raters, with a bootstrap interval over items."""
    from annotator.agreement import alpha, domain, encode

    level, dom = dim.scale, domain(dim)
    m = np.array([encode(dim, v) for v in model], dtype=float)
    r = [np.array([encode(dim, v) for v in row], dtype=float) for row in raters]

    def mean_alpha(pick: np.ndarray) -> float | None:
        values = [alpha(np.stack([m[pick], rk[pick]]), level, dom) for rk in r]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    n = len(model)
    point = mean_alpha(np.arange(n))
    rng = np.random.default_rng(seed)
    samples = [
        s for s in (mean_alpha(rng.integers(0, n, n)) for _ in range(bootstrap)) if s is not None
    ]
    low, high = np.percentile(samples, [2.5, 97.5]).tolist() if samples else (None, None)
    return {"alpha": point, "ci95": [low, high], "n": n}


def human_ceiling(dim, raters: list[list], bootstrap: int) -> dict:
    from annotator.agreement import agreement, alpha, domain, encode

    pairs = []
    for a in range(len(raters)):
        for b in range(a + 1, len(raters)):
            data = np.array(
                [[encode(dim, v) for v in raters[a]], [encode(dim, v) for v in raters[b]]]
            )
            pairs.append(alpha(data, dim.scale, domain(dim)))
    together = agreement(dim, RATERS, raters, bootstrap).as_dict()
    return {
        "pairwise mean": float(np.mean([p for p in pairs if p is not None])),
        "all raters": together,
    }


def prior_distribution(project: Path, run_id: int, dim_name: str) -> list[float] | None:
    """The prior a run's readout divides by for `dim_name` (None without one)."""
    db = sqlite3.connect(project)
    (settings,) = db.execute("SELECT settings FROM runs WHERE id = ?", (run_id,)).fetchone()
    db.close()
    readout = json.loads(settings)["readout"]
    return None if readout["prior"] == "none" else readout["priors"][dim_name]


def expected_score(dim, probs: list[float]) -> float:
    return float(sum(i * p for i, p in enumerate(probs)))


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson's r of the ranks, tied values sharing their mean rank."""

    def ranks(v: list[float]) -> np.ndarray:
        values = np.asarray(v, dtype=float)
        order = values.argsort(kind="stable")
        r = np.empty(len(values))
        r[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):
            tied = values == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def main(args) -> None:
    from annotator.calibration.readout import apply_prior
    from annotator.rubric import load_rubric

    rubric = load_rubric(RUBRIC)
    dims = [d.name for d in rubric.dimensions]
    fit, test = split(datasets.usr_topical_chat(), args.test or 20, args.seed)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    columns = ["id", "fact", "context", "response"]
    datasets.write_csv(fit + test, columns, out / "items.csv")
    datasets.write_csv(test, columns, out / "test.csv")
    for k, rater in enumerate(RATERS, start=1):
        rows = [{"id": r["id"], **{d: r[f"{d}_rater{k}"] for d in dims}} for r in fit]
        datasets.write_csv(rows, ["id", *dims], out / f"{rater}.csv")
    print(
        f"usr-tc: {len(fit)} fit responses, {len(test)} test responses "
        f"({args.test or 20} held-out dialogues)"
    )

    project, shipped_db, shipped = out / "project.db", out / "shipped.db", out / "usr-tc-head.gguf"
    n_ctx = str(args.max_tokens or 2048)
    threads = str(args.threads)
    if not project.exists():
        command(annotate_argmax(out / "items.csv", project, n_ctx, threads), log)
        for rater in RATERS:
            command(
                ["review", "import", str(project), str(out / f"{rater}.csv"), "--reviewer", rater],
                log,
            )
    coders: dict[str, dict[str, dict]] = {}
    coder_runs: dict[str, int] = {}
    for name, options in LEVERS.items():
        said = command(["calibrate", str(project), "--run", "1", "--no-head", *options], log)
        coder_runs[name] = calibrated_run(said)
        coders[name] = run_labels(project, coder_runs[name])
    said = command(
        ["calibrate", str(project), "--run", "1", "--rule", "median", "--out", str(shipped)], log
    )
    head_run = calibrated_run(said)
    coders["head (fit responses)"] = run_labels(project, head_run)
    if shipped_db.exists():
        shipped_db.unlink()
    command(
        [
            "annotate",
            str(out / "test.csv"),
            "--model",
            str(shipped),
            "--project",
            str(shipped_db),
            "--n-ctx",
            n_ctx,
            "--threads",
            threads,
        ],
        log,
    )
    coders["shipped file"] = run_labels(shipped_db, 1)
    same = sum(
        coders["shipped file"][r["id"]][d][0] == coders["head (fit responses)"][r["id"]][d][0]
        for r in test
        for d in dims
    )
    print(
        f"shipped file vs the head in the project: {same} of {len(test) * len(dims)} labels equal"
    )

    rows = []
    for dim in rubric.dimensions:
        raters = [[r[f"{dim.name}_rater{k}"] for r in test] for k in (1, 2, 3)]
        entry = {"dimension": dim.name, "human": human_ceiling(dim, raters, args.bootstrap)}
        for name, labels in coders.items():
            model = [labels[r["id"]][dim.name][0] for r in test]
            entry[name] = mean_rater_alpha(dim, model, raters, args.bootstrap)
            entry[name]["distinct"] = len(set(model))
        rows.append(entry)
    raters_mean = [float(np.mean([r[f"overall_rater{k}"] for k in (1, 2, 3)])) for r in test]
    overall = rubric.dimension("overall")
    # The probability-weighted overall score after each prior (rules do not change it).
    priors = {"base": "none", "content-free": "content-free", "batch": "batch"}
    rho = {}
    for name, prior in priors.items():
        lever = next(c for c, options in LEVERS.items() if options[-1] == prior)
        dist = prior_distribution(project, coder_runs[lever], "overall")
        rho[f"{name} weighted score"] = spearman(
            [
                expected_score(overall, apply_prior(coders[lever][r["id"]]["overall"][1], dist))
                for r in test
            ],
            raters_mean,
        )
    scores = head_scores(project, shipped, "overall")
    rho["head score"] = spearman([scores[r["id"]] for r in test], raters_mean)
    report = {
        "task": "usr-tc",
        "fit_items": len(fit),
        "test_items": len(test),
        "command": shlex.join(sys.argv),
        "shipped_equal_labels": [same, len(test) * len(dims)],
        "shipped_file_kb": round(shipped.stat().st_size / 1e3, 1),
        "spearman_overall": rho,
        "dimensions": rows,
    }
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    table = format_table(report)
    (out / "quality.md").write_text(table)
    print(table)


def format_table(report: dict) -> str:
    coders = [k for k in report["dimensions"][0] if k not in ("dimension", "human")]
    lines = [
        f"usr-tc: {report['fit_items']} fit responses, {report['test_items']} test responses "
        "(held-out dialogues); mean alpha(model, rater) over 3 raters, 95% bootstrap "
        "interval; [k] = distinct labels given",
        "",
        "| dimension | human pairwise | human all | " + " | ".join(coders) + " |",
        "|---" * (len(coders) + 3) + "|",
    ]
    ceiling = []
    for row in report["dimensions"]:
        human = row["human"]
        ceiling.append(human["pairwise mean"])
        cells = [f"{human['pairwise mean']:.3f}", _cell(human["all raters"])]
        cells += [_cell(row[c]) + f" [{row[c]['distinct']}]" for c in coders]
        lines.append(f"| {row['dimension']} | " + " | ".join(cells) + " |")
    keep = [n for n, row in enumerate(report["dimensions"]) if row["human"]["pairwise mean"] > 0.2]
    means = []
    for c in coders:
        values = [report["dimensions"][n][c]["alpha"] or 0.0 for n in keep]
        means.append(f"{np.mean(values):.3f}")
    lines.append(
        f"| mean over dims with human > 0.2 | {np.mean([ceiling[n] for n in keep]):.3f} | | "
        + " | ".join(means)
        + " |"
    )
    lines.append("")
    lines.append(
        "Spearman rho, overall score vs the raters' mean: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report["spearman_overall"].items())
    )
    lines.append(
        f"shipped file: {report['shipped_file_kb']} kB; its labels equal the project's "
        f"head labels on {report['shipped_equal_labels'][0]} of "
        f"{report['shipped_equal_labels'][1]}"
    )
    return "\n".join(lines) + "\n"


def _cell(a: dict) -> str:
    if a.get("alpha") is None:
        return f"undefined (n={a.get('n')})"
    low, high = a["ci95"]
    if low is None:
        return f"{a['alpha']:.3f}"
    return f"{a['alpha']:.3f} [{low:.2f}, {high:.2f}]"
