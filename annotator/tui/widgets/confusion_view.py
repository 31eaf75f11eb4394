"""A small text picture of model vs reviewer values for one dimension.

Short values (scores) get a matrix: model values down, reviewer values across, the diagonal
(agreement) highlighted. Long values (nominal labels) would not fit 80 columns as a matrix,
so they get the most frequent (model, reviewer) pairs with a bar each.
"""

from __future__ import annotations

from textual.content import Content

from annotator.tui.confusion import Confusion

MATRIX_MAX_VALUES = 9
MATRIX_MAX_WIDTH = 5  # characters of the longest value
PAIRS_SHOWN = 8
BAR_WIDTH = 24


def confusion_lines(confusion: Confusion) -> list[Content]:
    dim = confusion.dimension
    title = Content.assemble(
        (dim.name, "bold $text-accent"),
        f": model vs reviewer, {confusion.agreed} of {confusion.total} the same",
    )
    if confusion.total == 0:
        return [title, Content.styled("  no audit reviews of this dimension yet", "$text-muted")]
    short = [str(v) for v in dim.values]
    if len(dim.values) <= MATRIX_MAX_VALUES and max(map(len, short)) <= MATRIX_MAX_WIDTH:
        return [title, *_matrix(confusion)]
    return [title, *_pairs(confusion)]


def _matrix(confusion: Confusion) -> list[Content]:
    values = list(confusion.dimension.values)  # the full scale: gaps are informative
    width = max(3, *(len(str(v)) for v in values)) + 1
    head = "model ↓ reviewer →".ljust(20)
    lines = [Content.styled(head + "".join(str(v).rjust(width) for v in values), "$text-muted")]
    for m in values:
        parts: list[tuple[str, str] | str] = [("  " + str(m)).ljust(20)]
        for r in values:
            n = confusion.pairs.get((m, r), 0)
            text = (str(n) if n else "·").rjust(width)
            style = "bold $text-success" if m == r and n else ("bold" if n else "$text-muted")
            parts.append((text, style))
        lines.append(Content.assemble(*parts))
    return lines


def _pairs(confusion: Confusion) -> list[Content]:
    ranked = sorted(confusion.pairs.items(), key=lambda kv: (-kv[1], str(kv[0])))
    top = max(n for _, n in ranked)
    lines = []
    for (m, r), n in ranked[:PAIRS_SHOWN]:
        same = m == r
        pair = f"  {m} = {r}" if same else f"  {m} → {r}"
        bar = "█" * max(1, round(BAR_WIDTH * n / top))
        lines.append(
            Content.assemble(
                (pair[:34].ljust(35), "bold" if same else ""),
                f"{n:>4} ",
                (bar, "$text-success" if same else "$text-warning"),
            )
        )
    if len(ranked) > PAIRS_SHOWN:
        lines.append(Content.styled(f"  ... {len(ranked) - PAIRS_SHOWN} more pairs", "$text-muted"))
    return lines
