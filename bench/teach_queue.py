"""Teach queue against random reviews on USR Topical-Chat: which 60 reviewed items fit the
better calibration head?

    python bench/teach_queue.py --project P.db [--seeds 10] [--out runs/teach]

P.db: every USR Topical-Chat response annotated by the embedded model with hidden states
(as bench/rubric_quality.py builds it: `annotator annotate` of bench/datasets.py's 360
responses with bench/rubrics/usr_topical_chat.toml, `--rule argmax --n-ctx 2048`). It is
copied per seed, never changed. The three raters' labels (bench/datasets.py) are the
reviewers: a reviewed item gets all three, as rater1..rater3.

Per seed:
  1. 20 of the 60 dialogues (120 responses) are held out: the test set, which plays the audit
     sample (the teach queue is told to leave it out) and which no head is ever fitted on;
  2. random: 60 responses drawn at random from the other 240, stored as imported reviews,
     `calibrate` fits the head (annotator.calibration.calibrate, as `annotator calibrate`);
  3. teach: the same first 20 random responses, then batches of 10 from the app's teach queue
     (annotator.tui.queues.teach_todo, what the Review tab's teach queue shows) under the head
     `calibrate` fitted on everything reviewed so far, stored as teach reviews, until 60;
  4. each head labels the test responses; per dimension alpha(head, rater k) averaged over
     the three raters, then the mean over the six dimensions.
Printed: per seed, both means and their difference; over the seeds, each arm's mean and the
paired difference with 95% t-intervals; per dimension, the mean over seeds. Figures go to
OUT/teach_queue.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets

RATERS = ("rater1", "rater2", "rater3")
TEST_DIALOGUES = 20
TOTAL = 60  # reviewed items per arm
START = 20  # random items before the first teach batch (a head needs 20)
BATCH = 10  # teach items per round


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t-interval."""
    from scipy import stats

    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if len(a) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return mean, mean - half, mean + half


def save(store, rows: dict[str, dict], ids: list[str], queue: str, dims: list[str]) -> None:
    for k, rater in enumerate(RATERS, start=1):
        store.save_reviews(
            rater, queue, [(i, d, rows[i][f"{d}_rater{k}"]) for i in ids for d in dims]
        )


def head_alpha(store, run_id: int, rubric, rows: dict[str, dict], test: list[str]) -> dict:
    """Per dimension, alpha(run's label, rater k) on the test items, averaged over raters."""
    from annotator.agreement import alpha, domain, encode

    labels = {i: lab for i, lab, _ in store.annotations(run_id)}
    found = {}
    for dim in rubric.dimensions:
        model = [encode(dim, labels[i][dim.name].value) for i in test]
        pairs = []
        for k in range(1, len(RATERS) + 1):
            rater = [encode(dim, rows[i][f"{dim.name}_rater{k}"]) for i in test]
            a = alpha(np.array([model, rater], dtype=float), dim.scale, domain(dim))
            if a is not None:
                pairs.append(a)
        found[dim.name] = float(np.mean(pairs)) if pairs else None
    return found


def one_seed(source: Path, work: Path, seed: int, rows: dict[str, dict]) -> dict:
    from annotator.calibration.calibrate import calibrate
    from annotator.project.store import Store
    from annotator.tui import queues

    dialogues = sorted({r["dialogue"] for r in rows.values()})
    rng = random.Random(seed)
    rng.shuffle(dialogues)
    held = set(dialogues[:TEST_DIALOGUES])
    test = sorted(i for i, r in rows.items() if r["dialogue"] in held)
    pool = sorted(i for i, r in rows.items() if r["dialogue"] not in held)
    drawn = rng.sample(pool, TOTAL)
    result = {"seed": seed, "test_items": len(test)}
    for arm in ("random", "teach"):
        db = work / f"seed{seed}-{arm}.db"
        shutil.copy(source, db)
        with Store(db) as store:
            rubric = store.rubric()
            dims = [d.name for d in rubric.dimensions]
            if arm == "random":
                save(store, rows, drawn, "import", dims)
                picked = list(drawn)
            else:
                picked = drawn[:START]
                save(store, rows, picked, "import", dims)
                while len(picked) < TOTAL:
                    head_run = calibrate(store, run_id=1).run_id
                    batch = queues.teach_todo(store, head_run, set(test) | set(picked))
                    batch = batch[: min(BATCH, TOTAL - len(picked))]
                    assert batch and not set(batch) & set(test)
                    save(store, rows, batch, "teach", dims)
                    picked += batch
            fitted = calibrate(store, run_id=1)
            assert not set(picked) & set(test) and len(set(picked)) == TOTAL
            per_dim = head_alpha(store, fitted.run_id, rubric, rows, test)
            result[arm] = {
                "per_dim": per_dim,
                "mean": float(np.mean([a for a in per_dim.values() if a is not None])),
                "heads": sorted(fitted.fitted),
            }
        db.unlink()
    result["diff"] = result["teach"]["mean"] - result["random"]["mean"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/teach"))
    args = parser.parse_args()
    rows = {r["id"]: r for r in datasets.usr_topical_chat()}
    args.out.mkdir(parents=True, exist_ok=True)
    from annotator.project.store import Store

    with Store(args.project) as store:
        missing = set(rows) - store.done_ids(1)
        if missing:
            sys.exit(f"{args.project}: run 1 lacks {len(missing)} of the {len(rows)} responses")
    results = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        r = one_seed(args.project, args.out, seed, rows)
        results.append(r)
        print(
            f"seed {seed}: random {r['random']['mean']:.3f}  teach {r['teach']['mean']:.3f}  "
            f"teach - random {r['diff']:+.3f}  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    summary = {arm: interval([r[arm]["mean"] for r in results]) for arm in ("random", "teach")}
    summary["teach - random"] = interval([r["diff"] for r in results])
    dims = list(results[0]["random"]["per_dim"])
    per_dim = {
        d: {
            arm: float(np.mean([r[arm]["per_dim"][d] or 0.0 for r in results]))
            for arm in ("random", "teach")
        }
        for d in dims
    }
    wins = sum(r["diff"] > 0 for r in results)
    print(
        f"\nUSR Topical-Chat, {len(results)} seeds; heads fitted on {TOTAL} responses (3 raters "
        f"each), scored on {results[0]['test_items']} responses of {TEST_DIALOGUES} held-out "
        "dialogues; mean alpha over 6 dimensions (mean of alpha vs each rater); 95% t-intervals"
    )
    for name, (mean, low, high) in summary.items():
        print(f"  {name:<15} {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    print(f"  teach ahead on {wins} of {len(results)} seeds")
    for d, v in per_dim.items():
        print(f"  {d:<18} random {v['random']:.3f}  teach {v['teach']:.3f}")
    report = {
        "seeds": len(results),
        "total": TOTAL,
        "start": START,
        "batch": BATCH,
        "summary": summary,
        "per_dim": per_dim,
        "runs": results,
    }
    (args.out / "teach_queue.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
