"""Figures and the markdown table of bench/finetune_quality.py (no model, no torch)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

REFERENCE = "base+head"  # what every lever is compared with (same resamples)
SAME_ITEMS = "base+head (subset)"  # the base head fitted on the LoRA heads' items


def model_seconds(project: Path, run_id: int) -> float:
    """Mean engine seconds per item of a run (the project's own timing)."""
    db = sqlite3.connect(f"file:{project}?mode=ro", uri=True)
    (mean,) = db.execute(
        "SELECT avg(seconds) FROM annotations WHERE run_id = ?", (run_id,)
    ).fetchone()
    db.close()
    return round(mean or 0.0, 2)


def train_validation(run_dir: Path) -> dict | None:
    """train's best validation (held-out fit responses, vs their majority label)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("mean_alpha") is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["mean_alpha"])
    return {"mean_alpha": best["mean_alpha"], "step": best.get("step"), "n": best.get("n")}


def _alphas(rubric, model: dict, rows: list[dict], picks: list[np.ndarray]) -> np.ndarray:
    """alpha(model, rater k) averaged over raters: one row per pick, one column per dimension."""
    from annotator.agreement import alpha, domain, encode

    out = np.full((len(picks), len(rubric.dimensions)), np.nan)
    for j, dim in enumerate(rubric.dimensions):
        level, dom = dim.scale, domain(dim)
        m = np.array([encode(dim, model[r["id"]][dim.name][0]) for r in rows], dtype=float)
        raters = [
            np.array([encode(dim, r[f"{dim.name}_rater{k}"]) for r in rows], dtype=float)
            for k in (1, 2, 3)
        ]
        for i, pick in enumerate(picks):
            values = [alpha(np.stack([m[pick], rk[pick]]), level, dom) for rk in raters]
            values = [v for v in values if v is not None]
            out[i, j] = np.mean(values) if values else np.nan
    return out


def _interval(samples: np.ndarray) -> list[float | None]:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return [None, None]
    return [round(float(x), 4) for x in np.percentile(samples, [2.5, 97.5])]


def measure(rubric, labels: dict, fit, test, head_ids: set, bootstrap: int) -> dict:
    n = len(test)
    rng = np.random.default_rng(0)
    picks = [np.arange(n)] + [rng.integers(0, n, n) for _ in range(bootstrap)]
    dims = [d.name for d in rubric.dimensions]
    human = {
        d.name: len({r[f"{d.name}_rater{k}"] for r in test for k in (1, 2, 3)})
        for d in rubric.dimensions
    }
    table = {d: _alphas(rubric, labels[d], test, picks) for d in labels}
    means = {d: np.nanmean(a, axis=1) for d, a in table.items()}
    found = {}
    for name, a in table.items():
        model = labels[name]
        distinct = {d: len({model[r["id"]][d][0] for r in test}) for d in dims}
        fit_rows = [r for r in fit if r["id"] in model]
        fit_alpha = _alphas(rubric, model, fit_rows, [np.arange(len(fit_rows))])[0]
        entry = {
            "n": n,
            "dimensions": {
                d: {"alpha": _round(a[0, j]), "ci95": _interval(a[1:, j]), "distinct": distinct[d]}
                for j, d in enumerate(dims)
            },
            "mean": {"alpha": _round(means[name][0]), "ci95": _interval(means[name][1:])},
            "collapsed": [d for d in dims if human[d] >= 2 and distinct[d] < 2],
            "below_zero": [d for j, d in enumerate(dims) if a[0, j] < 0],
            "fit_items": len(fit_rows),
            "fit_mean_alpha": _round(float(np.nanmean(fit_alpha))) if fit_rows else None,
        }
        for ref in (REFERENCE, SAME_ITEMS):
            if ref in means and ref != name:
                diff = means[name] - means[ref]
                entry[f"minus {ref}"] = {"alpha": _round(diff[0]), "ci95": _interval(diff[1:])}
        found[name] = entry
    return {"human_distinct": human, "coders": found}


def _round(x) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), 4)


def _cell(a: dict | None) -> str:
    if not a or a.get("alpha") is None:
        return "n/a"
    low, high = a["ci95"]
    if low is None:
        return f"{a['alpha']:.3f}"
    return f"{a['alpha']:.3f} [{low:.2f}, {high:.2f}]"


def _cost(report: dict, coder: str) -> str:
    costs = report.get("costs", {})
    if coder.startswith("base"):
        c = costs.get("base", {})
        m = {k: v for k, v in c.get("minutes", {}).items() if "head" in coder and k == "calibrate"}
    elif coder.startswith("LoRA "):
        c = costs.get(coder.split()[1].removesuffix("+head"), {})
        m = dict(c.get("minutes", {}))
        if not coder.endswith("+head"):
            m.pop("calibrate", None)
    else:
        return "n/a"
    parts = [f"{k} {v:.1f} min" for k, v in sorted(m.items()) if v is not None]
    if c.get("export_refused"):  # the drift check refused the file; measured all the same
        parts.append("export refused by the drift check")
    return ", ".join([*parts, f"engine {c.get('annotate_s_per_item', 0):.1f} s/response"])


def format_table(report: dict) -> str:
    coders = report["levers"]["coders"]
    dims = list(next(iter(coders.values()))["dimensions"])
    r = report["recipe"]
    lines = [
        f"usr-tc: {report['fit_items']} fit responses (40 dialogues), {report['test_items']} test "
        f"responses (20 held-out dialogues); heads marked (subset) and LoRA heads are fitted on "
        f"{report['head_items']} fit responses. LoRA recipe: {r['steps']} steps x batch "
        f"{r['batch']}, lr {r['lr']}, rank {r['rank']}, max tokens {r['max_tokens']}, "
        f"{r['device']}/{r['quantize']}. Test: mean alpha(model, rater) over 3 raters, 95% "
        "bootstrap interval over responses; fit: the same on fit responses never used for that "
        "label (head: leave-one-out; LoRA argmax: train's validation alpha vs the majority).",
        "",
        "| lever | test mean of 6 dims | minus base+head | minus base+head (subset) | "
        "fit estimate | collapse | dims with alpha < 0 | cost |",
        "|---" * 8 + "|",
    ]
    for name, c in coders.items():
        fit = c["fit_mean_alpha"]
        if name.startswith("LoRA") and not name.endswith("+head"):
            tv = report["costs"].get(name.split()[1], {}).get("train_validation") or {}
            fit = tv.get("mean_alpha")
        lines.append(
            f"| {name} | {_cell(c['mean'])} n={c['n']} | {_cell(c.get('minus ' + REFERENCE))} | "
            f"{_cell(c.get('minus ' + SAME_ITEMS))} | "
            f"{'n/a' if fit is None else f'{fit:.3f}'} | "
            f"{', '.join(c['collapsed']) or 'none'} | {', '.join(c['below_zero']) or 'none'} | "
            f"{_cost(report, name)} |"
        )
    lines += ["", "| lever | " + " | ".join(dims) + " |", "|---" * (len(dims) + 1) + "|"]
    human = report["levers"]["human_distinct"]
    lines.append(
        "| human labels: distinct values | " + " | ".join(str(human[d]) for d in dims) + " |"
    )
    for name, c in coders.items():
        cells = [f"{_cell(c['dimensions'][d])} {{{c['dimensions'][d]['distinct']}}}" for d in dims]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("{k}: distinct values the lever gives on the test responses.")
    return "\n".join(lines) + "\n"
