"""One seeded index batcher: the order in which a loader visits the items of a split.

:class:`IndexBatcher` yields batches of item indices (``torch.long`` tensors): in order, or shuffled by a
``torch.Generator`` seeded once with ``seed``, each pass (epoch) drawing a new permutation from it, so a
run is reproducible and epochs differ. Every index appears exactly once per pass. A family's loader wraps
it and turns each index batch into tensors (:meth:`IndexBatcher.__iter__`); a loader that orders items
its own way (grouped batches) overrides :meth:`IndexBatcher.order` and draws from :attr:`generator`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


class IndexBatcher:
    """Batches of ``indices`` (default ``0 .. n - 1``) of ``batch_size`` (the last may be shorter).

    Args:
        n: number of items (ignored when ``indices`` is given).
        batch_size: items per batch.
        shuffle: a new permutation per pass (else the given order).
        seed: seeds the generator once, at construction.
        indices: the items to visit (a 1-D long tensor), e.g. every k-th window start.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, indices: "torch.Tensor | None" = None) -> None:
        import torch

        self.indices = indices if indices is not None else torch.arange(n)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def order(self) -> "torch.Tensor":
        """The items of one pass, in visiting order."""
        import torch

        if not self.shuffle:
            return self.indices
        return self.indices[torch.randperm(len(self.indices), generator=self.generator)]

    def batches(self) -> Iterator["torch.Tensor"]:
        """Index batches of one pass."""
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def __iter__(self):
        return self.batches()
