"""The export report, written next to the model file: JSON for machines, a table for people."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from annotator.agreement import verdict


def report_paths(out: Path) -> tuple[Path, Path]:
    """MODEL.gguf -> (MODEL.export.json, MODEL.export.txt): the same names whether the model
    is accepted or left as MODEL.gguf.rejected, so the report is found either way."""
    stem = out.name.removesuffix(".gguf")
    return out.with_name(stem + ".export.json"), out.with_name(stem + ".export.txt")


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table: one row per dimension, the three alphas side by side."""
    drift = report["drift"]
    lines = [
        f"export of {report['source']}",
        f"model     {report['file']}  ({report['quant']}, {report['size']} bytes)",
        f"sha256    {report['sha256']}",
        f"items     {drift['items']} from {report['check_items']}",
        f"gate      alpha(quantized, merged) >= {drift['threshold']} on every dimension",
        "",
    ]
    header = ("dimension", "level", "n", "q~merged", "q~human", "merged~human", "same", "gate")
    rows = [header]
    for d in drift["dimensions"]:
        rows.append(
            (
                d["dimension"],
                d["level"],
                str(d["n"]),
                _alpha(d["quantized_vs_merged"]),
                _alpha(d["quantized_vs_human"]),
                _alpha(d["merged_vs_human"]),
                f"{d['exact_agreement']:.1%}",
                ("pass" if d["passed"] else "FAIL")
                + ("" if d["basis"] == "alpha" else f" ({d['basis']})"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "",
        "alpha: Krippendorff's, at each dimension's level, 95% bootstrap interval in brackets; "
        "q = the quantized file; human alphas count items with a human label; "
        "'no variation': one value everywhere leaves alpha undefined, identical answers pass.",
        f"status    {report['status'].upper()}"
        + (f": {report['reason']}" if report.get("reason") else ""),
    ]
    for problem in report.get("problems", [])[:10]:
        lines.append(f"  note: {problem}")
    return "\n".join(lines) + "\n"


def _alpha(comparison: dict[str, Any]) -> str:
    value, (low, high) = comparison["alpha"], comparison["ci95"]
    if value is None:
        return "-"
    interval = "" if low is None else f" [{low:.2f}, {high:.2f}]"
    return f"{value:.3f}{interval} {verdict(value)}"


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write both forms next to `out`, each through a temporary name (never half-written)."""
    json_path, text_path = report_paths(out)
    for path, text in (
        (json_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
        (text_path, format_report(report)),
    ):
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return json_path, text_path
