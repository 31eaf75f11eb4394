"""Nominal heads on GoEmotions: the base and the bundled adapter, argmax and with a head.

    python bench/nominal_quality.py --out runs/quality/goemotions-heads [--check-shipped]

What it does, all through the `annotator` command (each command is printed first):
  1. fit comments: single-label GoEmotions train comments the bundled adapter never saw
     (train comments from 320 on, 5,760 by default: the demo's head; the adapter trained on
     the first 320);
     test comments: the 200 dev comments after the 40 bundled as the sample (README,
     "Quality on real human labels");
  2. per coder model, the embedded base (Gemma 3 270M Q4_K_M) and the bundled adapter
     (annotator/samples/goemotions/goemotions-lora.gguf), `annotate` labels fit and test
     comments once (argmax; the distributions and hidden states are stored). A head the
     bundled file carries is not applied (`--no-head`): "argmax" is the model's own answer;
  3. imports the fit comments' human labels as reviews (`review import`) and runs
     `calibrate --out`, which fits the nominal head (class-balanced logistic regression;
     inputs, class balance and L2 strength by 5-fold cross-validation on the fit comments
     only) and writes a copy of the model file carrying it;
  4. scores on the test comments only: accuracy, macro-F1 (scikit-learn's, over the values
     in the truth or the labels) and Krippendorff's alpha (nominal) against the human label,
     with n and a 95% bootstrap interval over comments. With --check-shipped it also labels
     the test comments with each written file on its own (`annotate --model`), as a field
     laptop would, and counts the labels equal to the head's in the project.
Which coder wins is decided on the fit comments' cross-validated figures that `calibrate`
reports; the test figures are reported, never used to choose. Figures go to
OUT/quality.json and OUT/quality.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotator.modelfile import KEY_CALIBRATION, read_model_info
from bench import datasets
from bench.rubric_quality import calibrated_run, command, run_labels

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "annotator" / "samples" / "goemotions"
MODELS = {"base": None, "adapter": SAMPLE / "goemotions-lora.gguf"}
SAMPLE_SIZE = 40  # dev comments bundled as the sample
ADAPTER_TRAIN = 320  # the adapter trained on the first 320 single-label train comments


def scores(truth: list[str], labels: list[str], bootstrap: int, seed: int = 0) -> dict:
    """Accuracy, macro-F1 and alpha (nominal) with 95% bootstrap intervals over comments."""
    from sklearn.metrics import f1_score

    from annotator.agreement import alpha

    values = sorted(set(truth) | set(labels))
    t = np.array([values.index(v) for v in truth])
    m = np.array([values.index(v) for v in labels])
    domain = [float(i) for i in range(len(values))]

    def figures(pick: np.ndarray) -> tuple[float, float, float | None]:
        a = alpha(np.stack([t[pick], m[pick]]).astype(float), "nominal", domain)
        f1 = f1_score(t[pick], m[pick], average="macro", zero_division=0)
        return float(np.mean(t[pick] == m[pick])), float(f1), a

    point = figures(np.arange(len(t)))
    rng = np.random.default_rng(seed)
    samples = [figures(rng.integers(0, len(t), len(t))) for _ in range(bootstrap)]
    out = {"n": len(t), "distinct": len(set(labels))}
    for k, name in enumerate(("accuracy", "macro_f1", "alpha")):
        drawn = [s[k] for s in samples if s[k] is not None]
        low, high = np.percentile(drawn, [2.5, 97.5]).tolist() if drawn else (None, None)
        out[name] = {"value": point[k], "ci95": [low, high]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="working folder (reused)")
    parser.add_argument("--fit", type=int, default=5760, help="fit comments [5760]")
    parser.add_argument("--test", type=int, default=200, help="test comments [200]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--check-shipped", action="store_true")
    parser.add_argument(
        "--coders", default="base,adapter", help="coder models measured [base,adapter]"
    )
    parser.add_argument(
        "--adapter",
        type=Path,
        default=MODELS["adapter"],
        help="the adapter measured [the bundled one; a head it carries is not applied]",
    )
    args = parser.parse_args()
    models = {"base": None, "adapter": args.adapter}
    coder_names = [c for c in args.coders.split(",") if c]
    for name in coder_names:
        if name not in models:
            sys.exit(f"--coders: unknown coder {name!r} (known: base, adapter)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    fit = datasets.goemotions(ADAPTER_TRAIN + args.fit, "train")[ADAPTER_TRAIN:]
    test = datasets.goemotions(SAMPLE_SIZE + args.test, "dev")[SAMPLE_SIZE:]
    datasets.write_csv(test + fit, ["id", "text"], out / "items.csv")
    datasets.write_csv(test, ["id", "text"], out / "test.csv")
    datasets.write_csv(fit, ["id", "emotion"], out / "fit-labels.csv")
    print(f"goemotions: {len(fit)} fit comments, {len(test)} test comments")
    rubric = SAMPLE / "rubric.toml"
    common = ["--n-ctx", "2048", "--threads", str(args.threads)]
    coders: dict[str, dict[str, str]] = {}
    cv: dict[str, dict] = {}
    shipped_equal: dict[str, list[int]] = {}
    for name in coder_names:
        model = models[name]
        project = out / f"{name}.db"
        with_model = [] if model is None else ["--model", str(model)]
        if model is not None and KEY_CALIBRATION in read_model_info(model).metadata:
            with_model.append("--no-head")  # the model's own answer, not the file's head
        # Resumes an earlier pass (labelled comments are skipped); a review imported again
        # replaces itself.
        said = command(
            [
                *("annotate", str(out / "items.csv"), "--rubric", str(rubric)),
                *("--project", str(project), "--rule", "argmax", *with_model, *common),
            ],
            log,
        )
        run = int(re.search(r"; run (\d+)", said).group(1))
        command(
            ["review", "import", str(project), str(out / "fit-labels.csv"), "--reviewer", "ge"],
            log,
        )
        coders[f"{name} argmax"] = _values(run_labels(project, run))
        shipped = out / f"{name}-head.gguf"
        said = command(["calibrate", str(project), "--run", str(run), "--out", str(shipped)], log)
        found = re.search(
            r"alpha vs the reviewers' majority (\S+), macro-F1 (\S+) \((.*)\); accuracy (\S+), "
            r"the model's own answer (\S+)",
            said,
        )
        assert found, said
        cv[name] = {
            "alpha": float(found.group(1)),
            "macro_f1": float(found.group(2)),
            "chosen": found.group(3),
            "accuracy": float(found.group(4)),
            "answer_accuracy": float(found.group(5)),
        }
        coders[f"{name} + head"] = _values(run_labels(project, calibrated_run(said)))
        cv[name]["file_mb"] = round(shipped.stat().st_size / 1e6, 1)
        if args.check_shipped:
            field = out / f"{name}-shipped.db"
            field.unlink(missing_ok=True)
            command(
                [
                    *("annotate", str(out / "test.csv"), "--project", str(field)),
                    *("--model", str(shipped), *common),
                ],
                log,
            )
            labels = _values(run_labels(field, 1))
            same = sum(labels[r["id"]] == coders[f"{name} + head"][r["id"]] for r in test)
            shipped_equal[name] = [same, len(test)]
    truth = [r["emotion"] for r in test]
    report = {
        "task": "goemotions nominal heads",
        "fit_items": len(fit),
        "test_items": len(test),
        "command": " ".join(sys.argv),
        "cross_validated_on_fit": cv,
        "shipped_equal_labels": shipped_equal,
        "coders": {
            name: scores(truth, [labels[r["id"]] for r in test], args.bootstrap)
            for name, labels in coders.items()
        },
    }
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    table = format_table(report)
    (out / "quality.md").write_text(table)
    print(table)


def _values(labels: dict[str, dict]) -> dict[str, str]:
    return {item: dims["emotion"][0] for item, dims in labels.items()}


def format_table(report: dict) -> str:
    def cell(f: dict) -> str:
        low, high = f["ci95"]
        return f"{f['value']:.3f} [{low:.2f}, {high:.2f}]"

    lines = [
        f"goemotions: {report['fit_items']} fit comments (the head's), "
        f"{report['test_items']} test comments; 95% bootstrap intervals over comments",
        "",
        "| coder | accuracy | macro-F1 | alpha (nominal) | distinct labels |",
        "|---|---|---|---|---|",
    ]
    for name, s in report["coders"].items():
        lines.append(
            f"| {name} | {cell(s['accuracy'])} | {cell(s['macro_f1'])} | {cell(s['alpha'])} "
            f"| {s['distinct']} |"
        )
    lines.append("")
    for name, f in report["cross_validated_on_fit"].items():
        lines.append(
            f"{name} head, 5-fold on the fit comments: alpha {f['alpha']:.3f}, macro-F1 "
            f"{f['macro_f1']:.3f}, accuracy {f['accuracy']:.3f} (the model's own answer "
            f"{f['answer_accuracy']:.3f}; {f['chosen']}); written file {f['file_mb']} MB"
        )
    for name, (same, n) in report["shipped_equal_labels"].items():
        lines.append(f"{name} head file on its own: {same} of {n} test labels equal the head's")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
