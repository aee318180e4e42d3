"""Epoch-level metrics over every sample, whatever the number of DDP ranks."""

from __future__ import annotations

from collections.abc import Callable

import torch


def gather_in_sample_order(module, local: torch.Tensor, dataset_size: Callable[[], int | None]) -> torch.Tensor:
    """Rows of ``local`` from every rank, back in dataset order, without the sampler's repeats.

    ``module`` is the LightningModule (its ``all_gather`` works with one rank too). With several
    ranks, DistributedSampler deals sample i to rank i % world and pads the last round with
    repeats, so the gathered ``(world, n / world, ...)`` is interleaved back and cut to
    ``dataset_size()`` (a callable: it is only asked with several ranks, where a trainer exists).

    Shape:
        - local: :math:`(N_{rank}, *)`
        - output: :math:`(N, *)`
    """
    gathered = module.all_gather(local)
    if gathered.dim() == local.dim() + 1:
        gathered = gathered.transpose(0, 1).flatten(0, 1)[: dataset_size()]
    return gathered
