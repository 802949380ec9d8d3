"""Trajectories -> padded tensors for the GRPO loss, aligned with ``token_logprobs``.

For N trajectories and T the longest token sequence, ``pack_trajectories`` builds a ``PackedBatch``:

- ``input_ids`` ``[N, T]``: each trajectory's ``token_ids`` (never re-tokenized), right-padded with ``pad_id``;
- ``attention_mask`` ``[N, T]``: 1 on real tokens, 0 on padding;
- ``loss_mask`` ``[N, T - 1]`` (bool): ``loss_mask[b, t] = trajectory.loss_mask[t + 1]``, i.e. aligned with
  ``token_logprobs(logits, input_ids)`` whose column t scores token t + 1. It is 1 only on tokens the
  sampler produced; prompt, observation (tool turn), loop-appended and padding tokens are 0;
- ``old_logprobs`` ``[N, T - 1]`` (float32): the sampler's log-prob of token t + 1 in the same layout (0.0 where
  the mask is 0). These are log-probs under ``logits / sampling temperature``; they equal the policy's
  log-probs only when those are computed with the same temperature;
- ``advantages`` ``[N]`` (float32), ``lengths`` ``[N]`` and ``index`` ``[N]`` (each row's position in the list
  passed in, since rows may be reordered or dropped).

``keep`` drops trajectories (e.g. truncated episodes) before packing; rows are sorted longest first so that
``micro_batches`` cuts batches of similar lengths (little padding) and the largest comes first (an
out-of-memory error surfaces on the first micro-batch, not after minutes of work). Each micro-batch is cut
to its own longest row. With ``groups`` (a group id per trajectory, e.g. its GRPO group) the rows of a group
stay together, groups ordered by their longest row and rows longest first within a group, so that a
micro-batch holds whole groups whose shared prompt is run once (``toolmaster.algorithms.prefix_sharing``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch
from torch import Tensor


class Packable(Protocol):
    """What packing reads of a trajectory (``toolmaster.trajectory.Trajectory`` has it)."""

    task_id: str
    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]


@dataclass
class PackedBatch:
    """Episodes as padded tensors for one update: ids, masks, old log-probs and advantages per row."""

    input_ids: Tensor  # [N, T] long
    attention_mask: Tensor  # [N, T] long
    loss_mask: Tensor  # [N, T - 1] bool, aligned with token_logprobs
    old_logprobs: Tensor  # [N, T - 1] float32 (sampler log-probs, 0 where loss_mask is 0)
    advantages: Tensor  # [N] float32
    lengths: Tensor  # [N] long
    index: Tensor  # [N] long: row -> position in the packed trajectory list
    ref_logprobs: Tensor | None = None  # [N, T - 1], filled by the trainer when a KL term is used

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> PackedBatch:
        """The same batch with every tensor on ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in values.items() if isinstance(v, Tensor)})

    def rows(self, start: int, stop: int) -> PackedBatch:
        """Rows ``start:stop``, with columns cut to the longest of them."""
        width = max(2, int(self.lengths[start:stop].max())) if stop > start else 2
        width = min(width, self.input_ids.shape[1])
        ref = self.ref_logprobs
        return replace(
            self,
            input_ids=self.input_ids[start:stop, :width],
            attention_mask=self.attention_mask[start:stop, :width],
            loss_mask=self.loss_mask[start:stop, : width - 1],
            old_logprobs=self.old_logprobs[start:stop, : width - 1],
            advantages=self.advantages[start:stop],
            lengths=self.lengths[start:stop],
            index=self.index[start:stop],
            ref_logprobs=None if ref is None else ref[start:stop, : width - 1],
        )

    def micro_batches(self, size: int) -> Iterator[PackedBatch]:
        """Consecutive slices of at most ``size`` rows (rows are sorted longest first by the packer)."""
        if size < 1:
            raise ValueError(f"micro-batch size must be >= 1, got {size}")
        for start in range(0, len(self), size):
            yield self.rows(start, min(start + size, len(self)))


def pack_trajectories(
    trajectories: Sequence[Packable],
    advantages: Tensor | Sequence[float],
    pad_id: int,
    keep: Sequence[bool] | None = None,
    sort_by_length: bool = True,
    groups: Sequence[int] | None = None,
) -> PackedBatch:
    """Pad the kept trajectories into a ``PackedBatch`` (see the module docstring)."""
    advantages = torch.as_tensor(advantages, dtype=torch.float32).detach().cpu()
    if advantages.shape != (len(trajectories),):
        raise ValueError(
            f"need one advantage per trajectory: {tuple(advantages.shape)} vs {len(trajectories)}"
        )
    if keep is not None and len(keep) != len(trajectories):
        raise ValueError(f"keep has {len(keep)} entries for {len(trajectories)} trajectories")
    rows = [i for i in range(len(trajectories)) if keep is None or keep[i]]
    if not rows:
        raise ValueError("no trajectory left to pack")
    for i in rows:
        t = trajectories[i]
        if not (len(t.token_ids) == len(t.loss_mask) == len(t.logprobs)):
            raise ValueError(
                f"trajectory {i} ({t.task_id}): token_ids, loss_mask and logprobs differ in length "
                f"({len(t.token_ids)}, {len(t.loss_mask)}, {len(t.logprobs)})"
            )
        if len(t.token_ids) < 2:
            raise ValueError(f"trajectory {i} ({t.task_id}) has fewer than 2 tokens")
    if groups is not None and len(groups) != len(trajectories):
        raise ValueError(f"groups has {len(groups)} entries for {len(trajectories)} trajectories")
    if sort_by_length and groups is not None:
        longest: dict[int, int] = {}
        for i in rows:
            longest[groups[i]] = max(longest.get(groups[i], 0), len(trajectories[i].token_ids))
        rows.sort(key=lambda i: (-longest[groups[i]], groups[i], -len(trajectories[i].token_ids), i))
    elif sort_by_length:
        rows.sort(key=lambda i: (-len(trajectories[i].token_ids), i))
    n = len(rows)
    width = max(len(trajectories[i].token_ids) for i in rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width - 1), dtype=torch.bool)
    old_logprobs = torch.zeros((n, width - 1), dtype=torch.float32)
    for row, i in enumerate(rows):
        t = trajectories[i]
        length = len(t.token_ids)
        input_ids[row, :length] = torch.tensor(t.token_ids, dtype=torch.long)
        attention_mask[row, :length] = 1
        mask = torch.tensor(t.loss_mask[1:], dtype=torch.bool)
        loss_mask[row, : length - 1] = mask
        logprobs = torch.tensor(t.logprobs[1:], dtype=torch.float32)
        old_logprobs[row, : length - 1] = torch.where(mask, logprobs, torch.zeros_like(logprobs))
    index = torch.tensor(rows, dtype=torch.long)
    return PackedBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        old_logprobs=old_logprobs,
        advantages=advantages[index].clone(),
        lengths=attention_mask.sum(dim=1),
        index=index,
    )
