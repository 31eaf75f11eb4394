"""The teach queue: items chosen to improve the calibration head, never the audit sample.

The audit sample stays a uniform random sample, so alpha on it stays honest; the teach queue
picks, from the other annotated items, the ones a reviewer's label should help the head most:

- doubtful under the current head: 1 - the mean margin of the item's labels in the latest run
  (a calibrated run's margins are its head's: the distance to the nearest threshold, or the
  gap between the two most probable values; before any head, the model's own margins);
- spread over the data: greedily, each pick maximises doubt x min(1, d / r), where d is the
  distance (in the first principal components of the standardised mean middle-block states,
  what the heads read) to the nearest item already reviewed for the head or already picked,
  and r the typical distance between neighbours at the batch's scale. So a batch does not
  spend twenty reviews on twenty near-copies of one confusing item, and it moves away from
  what the head has already seen.

Deterministic: no randomness but a seeded PCA, ties go to the data file's order. Reviews from
it are filed under the queue "teach": `calibrate` fits heads on them, alpha never counts them.
Items without stored hidden states (runs from before m003) are ordered by doubt alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from annotator.calibration.features import features, stored_states
from annotator.project.store import Label, Output

TEACH = "teach"
BATCH = 20  # items per teach batch: then calibrate, and the next batch reads the new head
COMPONENTS = 16  # principal components the spread is measured in
RADIUS_SAMPLE = 2000  # candidates the neighbour distance r is estimated on, at most


def doubt(labels: dict[str, Label]) -> float:
    """1 - the mean margin over the item's dimensions: 0 sure everywhere, 1 a tie everywhere."""
    return 1.0 - float(np.mean([label.margin for label in labels.values()]))


def spread_picks(
    doubts: np.ndarray, points: np.ndarray | None, covered: int, size: int
) -> list[int]:
    """Indices (into the first len(doubts) rows) of up to `size` candidates, in pick order.

    points: one row per candidate, then `covered` rows of items already reviewed for the head
    (None: no features, order by doubt alone). Ties go to the lower index."""
    n = len(doubts)
    size = min(size, n)
    if n == 0 or size <= 0:
        return []
    if points is None:
        return [int(i) for i in np.lexsort((np.arange(n), -doubts))[:size]]
    cand = points[:n]
    nearest = np.full(n, np.inf)
    if covered:
        for row in points[n:]:  # one pass per covered item: memory stays at n
            nearest = np.minimum(nearest, np.linalg.norm(cand - row, axis=1))
    radius = _radius(cand, size)
    picked: list[int] = []
    score = np.empty(n)
    for _ in range(size):
        reach = np.ones(n) if radius <= 0 else np.minimum(1.0, nearest / radius)
        score[:] = doubts * reach
        score[picked] = -np.inf
        best = int(np.argmax(score))  # the first of equal scores
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(cand - cand[best], axis=1))
    return picked


def _radius(cand: np.ndarray, size: int) -> float:
    """The typical distance from a candidate to its k-th nearest other candidate, k =
    candidates / batch: about the radius of one of `size` equal cells of the data."""
    n = len(cand)
    if n < 2:
        return 0.0
    step = max(1, n // RADIUS_SAMPLE)
    sample = cand[::step][:RADIUS_SAMPLE]
    k = max(1, min(len(sample) - 1, round(len(sample) / max(1, size))))
    squared = (sample**2).sum(axis=1)
    gram = squared[:, None] + squared[None, :] - 2 * sample @ sample.T
    dists = np.sort(np.sqrt(np.maximum(gram, 0.0)), axis=1)  # column 0: the point itself
    return float(np.median(dists[:, k]))


def embed(states: Sequence[np.ndarray]) -> np.ndarray:
    """Each item's mean middle-block state, standardised, in its first COMPONENTS principal
    components (scikit-learn's PCA, seeded)."""
    from sklearn.decomposition import PCA

    x = np.stack([features(s) for s in states])
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    x /= scale
    k = min(COMPONENTS, x.shape[0], x.shape[1])
    if k < 1:
        return x
    return PCA(n_components=k, svd_solver="full", random_state=0).fit_transform(x)


def teach_queue(
    outputs: Sequence[Output],
    n_dims: int,
    exclude: Collection[str],
    covered: Collection[str],
    size: int = BATCH,
) -> list[str]:
    """The next teach batch: up to `size` item ids from a run's `outputs` (data file order).

    exclude: never in the queue (the audit sample, and what this reviewer has reviewed in any
    queue); covered: items already reviewed for the head (audit, import, teach, by anyone),
    which the picks keep away from."""
    exclude, covered = set(exclude), set(covered)
    candidates = [o for o in outputs if o.item_id not in exclude and o.labels]
    if not candidates:
        return []
    doubts = np.array([doubt(o.labels) for o in candidates])
    seen = [o for o in outputs if o.item_id in covered]
    points = None
    if all(o.hidden is not None for o in candidates + seen):
        states = [stored_states(o.hidden, n_dims) for o in candidates + seen]
        points = embed(states)
    picks = spread_picks(doubts, points, len(seen), size)
    return [candidates[i].item_id for i in picks]
