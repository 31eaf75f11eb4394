"""Quality on real human labels: base zero-shot vs fine-tuned, merged and as shipped GGUF files.

    python bench/quality.py goemotions --out runs/quality/goemotions
    python bench/quality.py newsroom --out runs/quality/newsroom
    python bench/quality.py usr-tc --out runs/quality/usr-tc      (bench/rubric_quality.py)

For one task from ../shared/data it
  1. writes the training file and a test file of items never seen in training (GoEmotions:
     train split for training, dev split for testing, skipping the 40 dev comments bundled as
     the sample; Newsroom: whole articles held out, so no test summary shares its article with
     a training one);
  2. trains with `annotator train` (skipped when OUT/run/merged exists: a finished run is
     loaded), then exports with `annotator export` twice: the merged model as Q4_K_M, and the
     LoRA adapter for the Q4_K_M base it was trained on (`--adapter`). A file the drift check
     refuses (MODEL.gguf.rejected) is still measured here: the table says what shipping it
     would have meant;
  3. labels the test items with each coder and prints, per dimension, Krippendorff's alpha
     against the human label with n and a 95% bootstrap interval:
       human ceiling   all raters at once (Newsroom: 3 raters per summary); GoEmotions'
                       released files carry one aggregated label per comment, so no ceiling;
       base zero-shot  the embedded Gemma 3 270M Q4_K_M, no training (annotator's engine);
       merged          the fine-tuned fp32 model (torch, the same constrained decoding);
       q4_k_m          the merged model quantized to Q4_K_M (engine);
       adapter         Q4_K_M base + the LoRA adapter GGUF (engine), what the demo ships.
     The human label models are compared against is the one training used: GoEmotions' label,
     Newsroom's median rater (low median).

Every command it runs is printed first; figures go to OUT/quality.json and OUT/quality.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets

ROOT = Path(__file__).resolve().parent.parent
RUBRICS = {
    "goemotions": ROOT / "annotator/samples/goemotions/rubric.toml",
    "newsroom": ROOT / "annotator/samples/newsroom/rubric.toml",
}
SAMPLE_SIZE = 40  # dev comments bundled as annotator/samples/goemotions/items.csv


def goemotions_sets(n_train: int, n_test: int) -> tuple[list[dict], list[dict], list[str]]:
    train = datasets.goemotions(n_train, "train")  # the first single-label comments
    test = datasets.goemotions(SAMPLE_SIZE + n_test, "dev")[SAMPLE_SIZE:]
    return train, test, []


def newsroom_sets(
    n_train: int, n_test_articles: int, seed: int
) -> tuple[list[dict], list[dict], list[str]]:
    rows = datasets.newsroom()
    articles = sorted({r["article"] for r in rows})
    random.Random(seed).shuffle(articles)
    held = set(articles[:n_test_articles])
    test = [r for r in rows if r["article"] in held]
    train = [r for r in rows if r["article"] not in held]
    random.Random(seed).shuffle(train)
    raters = [f"rater{i}" for i in (1, 2, 3)]
    return train[:n_train], test, raters


def run(cmd: list[str], log: Path) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
    print(f"  exit {code} in {time.perf_counter() - started:.0f} s (log: {log})", flush=True)
    if code not in (0, 1):
        sys.exit(f"{cmd[0]} failed: see {log}")


def values(answers) -> list[dict]:
    """export.drift's answers (dimension -> Decision per item) as dimension -> value."""
    return [{k: d.value for k, d in a.items()} for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=[*RUBRICS, "usr-tc"])
    parser.add_argument("--out", type=Path, required=True, help="working folder (reused)")
    parser.add_argument(
        "--train", type=int, default=None, help="training items [goemotions 320, newsroom 150]"
    )
    parser.add_argument(
        "--test",
        type=int,
        default=None,
        help="test items (goemotions) or held-out articles (newsroom) [200, 15]",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="training length and engine context [goemotions 2048, newsroom 640]",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3407)
    args = parser.parse_args()
    if args.task == "usr-tc":  # no training: every readout lever on one model pass
        from bench import rubric_quality

        rubric_quality.main(args)
        return

    from annotator.agreement import agreement
    from annotator.export.drift import CheckItem
    from annotator.rubric import load_rubric

    rubric = load_rubric(RUBRICS[args.task])
    dims = [d.name for d in rubric.dimensions]
    inputs = [i.column for i in rubric.inputs]
    if args.task == "goemotions":
        train, test, raters = goemotions_sets(args.train or 320, args.test or 200)
        max_tokens = args.max_tokens or 2048
    else:
        train, test, raters = newsroom_sets(args.train or 150, args.test or 15, args.seed)
        max_tokens = args.max_tokens or 640
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    datasets.write_csv(train, ["id", *inputs, *dims], out / "train.csv")
    datasets.write_csv(test, ["id", *inputs, *dims], out / "test.csv")
    print(f"{args.task}: {len(train)} training items, {len(test)} test items (never trained on)")

    annotator = [sys.executable, "-m", "annotator"]
    run_dir = out / "run"
    if not (run_dir / "merged").is_dir():
        run(
            [
                *annotator,
                "train",
                "--data",
                str(out / "train.csv"),
                "--rubric",
                str(RUBRICS[args.task]),
                "--out",
                str(run_dir),
                "--epochs",
                str(args.epochs),
                "--batch-size",
                str(args.batch_size),
                "--lr",
                str(args.lr),
                "--max-tokens",
                str(max_tokens),
                "--threads",
                str(args.threads),
                "--seed",
                str(args.seed),
            ],
            out / "train.log",
        )
    else:
        print(f"loading the finished run {run_dir}")
    q4 = out / "model-q4_k_m.gguf"
    adapter = out / "adapter.gguf"
    for target, extra in ((q4, ["--quant", "q4_k_m"]), (adapter, ["--adapter"])):
        if not target.exists() and not target.with_name(target.name + ".rejected").exists():
            run(
                [
                    *annotator,
                    "export",
                    str(run_dir / "merged"),
                    "--out",
                    str(target),
                    *extra,
                    "--n-ctx",
                    str(max_tokens),
                    "--threads",
                    str(args.threads),
                ],
                out / f"export-{target.stem}.log",
            )
    q4_file = q4 if q4.exists() else q4.with_name(q4.name + ".rejected")
    adapter_file = adapter if adapter.exists() else adapter.with_name(adapter.name + ".rejected")

    items = [CheckItem(r["id"], {c: r[c] for c in inputs}, {d: r[d] for d in dims}) for r in test]
    coders: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    from annotator.export import drift
    from annotator.inference.backend import EngineSettings
    from annotator.modelfile import default_model_path

    base = default_model_path()
    settings = EngineSettings(n_ctx=max_tokens, n_threads=args.threads)
    # The same helpers as export's drift check: the engine on a GGUF (or base + adapter),
    # and the merged model scored torch-side with the same decoding.
    steps = {
        "base zero-shot": lambda: values(drift.engine_answers(base, rubric, items, settings)[0]),
        "merged": lambda: values(
            drift.merged_answers(run_dir / "merged", rubric, items, max_tokens)
        ),
        "q4_k_m": lambda: values(drift.engine_answers(q4_file, rubric, items, settings)[0]),
        "adapter": lambda: values(
            drift.engine_answers(adapter_file, rubric, items, settings, base)[0]
        ),
    }
    for name, label in steps.items():
        print(f"labelling {len(items)} test items: {name}", flush=True)
        started = time.perf_counter()
        coders[name] = label()
        seconds[name] = round(time.perf_counter() - started, 1)

    rows = []
    for dim in rubric.dimensions:
        human = [dim.parse_value(r[dim.name]) for r in test]
        entry = {"dimension": dim.name, "level": dim.scale}
        if raters:
            per_rater = [[dim.parse_value(r[f"{dim.name}_{k}"]) for r in test] for k in raters]
            entry["human ceiling"] = agreement(
                dim, tuple(raters), per_rater, args.bootstrap
            ).as_dict()
        for name, labels in coders.items():
            model = [labels[i][dim.name] for i in range(len(test))]
            entry[name] = agreement(dim, (name, "human"), [model, human], args.bootstrap).as_dict()
        rows.append(entry)

    report = {
        "task": args.task,
        "train_items": len(train),
        "test_items": len(test),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_tokens": max_tokens,
        "files": {"q4_k_m": str(q4_file), "adapter": str(adapter_file)},
        "seconds": seconds,
        "command": shlex.join(sys.argv),
        "dimensions": rows,
    }
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    table = format_table(report)
    (out / "quality.md").write_text(table)
    print(table)


def format_table(report: dict) -> str:
    names = ["human ceiling", "base zero-shot", "merged", "q4_k_m", "adapter"]
    lines = [
        f"{report['task']}: {report['train_items']} training items, {report['test_items']} "
        f"test items; alpha vs the human label, 95% bootstrap interval",
        "",
        "| dimension | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for row in report["dimensions"]:
        cells = []
        for name in names:
            a = row.get(name)
            if a is None:
                cells.append("n/a")
            elif a["alpha"] is None or a["ci95"][0] is None:
                cells.append(f"undefined (n={a['n']})")
            else:
                low, high = a["ci95"]
                cells.append(f"{a['alpha']:.3f} [{low:.2f}, {high:.2f}] n={a['n']}")
        lines.append(f"| {row['dimension']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
