"""Readers for the human-annotated data in ../shared/data, written out as annotator data files.

    python bench/datasets.py newsroom --n 200 --out newsroom.csv [--labels labels.csv]
    python bench/datasets.py goemotions --n 300 --out goemotions.csv [--split dev]

Newsroom: one row per (article, system) with `summary` and `article` (HTML paragraph tags
turned into newlines); labels are the per-rater scores (rater1..3) and their median.
GoEmotions: comments with exactly one emotion label, so one nominal dimension fits.
USR Topical-Chat: one row per response with `fact`, `context` and `response`, the dialogue id
(`dialogue`), and per dimension the three raters' scores (<dim>_rater1..3) and their median.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
NEWSROOM_DIMS = ("Informativeness", "Relevance", "Fluency", "Coherence")


def shared_dir() -> Path:
    return SHARED


def newsroom(n: int | None = None) -> list[dict]:
    data = json.loads((SHARED / "newsroom" / "newsroom.json").read_text(encoding="utf-8"))
    rows = []
    for inst in data["instances"][:n]:
        text = inst["instance"]
        head, _, article = text.partition("### Source Article")
        summary = head.replace("### Generated Summary", "").strip()
        article = article.replace("</p><p>", "\n").strip()
        row = {"id": f"nr{inst['id']}", "summary": summary, "article": article}
        for dim in NEWSROOM_DIMS:
            scores = inst["annotations"][dim]["individual_human_scores"]
            for rater, score in enumerate(scores, start=1):
                row[f"{dim.lower()}_rater{rater}"] = score
            row[dim.lower()] = int(statistics.median_low(scores))
        rows.append(row)
    return rows


USR_DIMS = {
    "Understandable": "understandable",
    "Natural": "natural",
    "Maintains Context": "maintains_context",
    "Engaging": "engaging",
    "Uses Knowledge": "uses_knowledge",
    "Overall": "overall",
}


def usr_topical_chat() -> list[dict]:
    """360 responses (60 dialogues x 6), ids `tc<dialogue>-<response>`, in file order."""
    path = SHARED / "usr_topical_chat" / "usr_topical_chat.json"
    rows = []
    for number, dialogue in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        for index, response in enumerate(dialogue["responses"]):
            row = {
                "id": f"tc{number}-{index}",
                "dialogue": number,
                "fact": dialogue["fact"].strip(),
                "context": dialogue["context"].strip(),
                "response": response["response"].strip(),
            }
            for source, dim in USR_DIMS.items():
                scores = response[source]
                for rater, score in enumerate(scores, start=1):
                    row[f"{dim}_rater{rater}"] = score
                row[dim] = int(statistics.median_low(scores))
            rows.append(row)
    return rows


def goemotions(n: int | None = None, split: str = "dev") -> list[dict]:
    names = (SHARED / "goemotions" / "emotions.txt").read_text(encoding="utf-8").split("\n")
    rows = []
    with (SHARED / "goemotions" / f"{split}.tsv").open(encoding="utf-8", newline="") as handle:
        for text, labels, comment_id in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if "," in labels:
                continue
            rows.append({"id": comment_id, "text": text, "emotion": names[int(labels)]})
            if n is not None and len(rows) >= n:
                break
    return rows


def emotion_names() -> list[str]:
    return (SHARED / "goemotions" / "emotions.txt").read_text(encoding="utf-8").split("\n")


def write_csv(rows: list[dict], columns: list[str], out: Path) -> None:
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=["newsroom", "goemotions", "usr-tc"])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--out", type=Path, required=True, help="items file (inputs only)")
    parser.add_argument("--labels", type=Path, help="labels file (id + label columns)")
    args = parser.parse_args()
    if args.dataset == "newsroom":
        rows = newsroom(args.n)
        write_csv(rows, ["id", "summary", "article"], args.out)
        label_cols = [d.lower() for d in NEWSROOM_DIMS]
        label_cols += [f"{d}_rater{r}" for d in label_cols for r in (1, 2, 3)]
    elif args.dataset == "usr-tc":
        rows = usr_topical_chat()[: args.n]
        write_csv(rows, ["id", "fact", "context", "response"], args.out)
        label_cols = list(USR_DIMS.values())
        label_cols += [f"{d}_rater{r}" for d in label_cols for r in (1, 2, 3)]
    else:
        rows = goemotions(args.n, args.split)
        write_csv(rows, ["id", "text"], args.out)
        label_cols = ["emotion"]
    if args.labels:
        write_csv(rows, ["id", *label_cols], args.labels)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
