"""Model vs reviewer value pairs per dimension, for the agreement view (no Textual here).

Only the reviews that alpha uses are counted (`unbiased_labels`: audit or imported, one per
reviewer, item and dimension), against the same run's model labels, so the picture matches the
numbers next to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from annotator.project.reviews import unbiased_labels
from annotator.project.store import Label
from annotator.rubric import Dimension, Rubric, Value


@dataclass(frozen=True)
class Confusion:
    dimension: Dimension
    pairs: Counter  # (model value, reviewer value) -> count

    @property
    def total(self) -> int:
        return sum(self.pairs.values())

    @property
    def agreed(self) -> int:
        return sum(n for (m, r), n in self.pairs.items() if m == r)


def confusions(
    rubric: Rubric,
    annotations: list[tuple[str, dict[str, Label], int]],
    reviews: list[tuple[str, str, str, Value, str]],
) -> list[Confusion]:
    model = {item_id: labels for item_id, labels, _ in annotations}
    counted = unbiased_labels(reviews)
    result = []
    for dim in rubric.dimensions:
        pairs: Counter = Counter()
        for mine in counted.values():
            for (item_id, dim_name), value in mine.items():
                if dim_name != dim.name:
                    continue
                label = model.get(item_id, {}).get(dim.name)
                if label is not None:
                    pairs[(label.value, value)] += 1
        result.append(Confusion(dim, pairs))
    return result
