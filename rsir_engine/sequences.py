"""Turn variable-length item sequences into padded tensors and training windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["pad_left", "training_windows"]


def pad_left(sequences: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Left-pad sequences with 0, keeping each one's most recent ``max_len`` items.

    Returns:
        (B, L) int64 tensor with L = min(max_len, longest sequence), at least 1.
    """
    width = max(1, min(max_len, max((len(seq) for seq in sequences), default=1)))
    out = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = list(seq)[-width:]
        if tail:
            out[row, width - len(tail):] = tail
    return torch.from_numpy(out)


def training_windows(
    sequences: Sequence[Sequence[int]], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut sequences into left-padded windows so every next-item target is trained once.

    A sequence ``s`` yields targets ``s[1:]``, each predicted from the items
    before it. A sequence with at most ``max_len`` targets is one window. A
    longer one is cut into windows of ``max_len`` inputs whose ends step back
    by ``max_len // 2`` from the last item. In every window but the earliest,
    only the second half of the targets counts, so each target is counted
    exactly once and is predicted from at least ``max_len // 2`` earlier items.

    Returns:
        ``(inputs, targets, loss_mask)``, each (W, max_len); ``loss_mask`` is bool.
    """
    stride = max(1, max_len // 2)
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    masks: list[np.ndarray] = []

    def add(seq: list[int], end: int, counted: range) -> None:
        # The window covers target indices [end - width, end); target j is seq[j + 1].
        width = min(max_len, end)
        row_in = np.zeros(max_len, dtype=np.int64)
        row_out = np.zeros(max_len, dtype=np.int64)
        row_mask = np.zeros(max_len, dtype=bool)
        offset = max_len - width
        row_in[offset:] = seq[end - width:end]
        row_out[offset:] = seq[end - width + 1:end + 1]
        for target_index in counted:
            row_mask[offset + target_index - (end - width)] = True
        inputs.append(row_in)
        targets.append(row_out)
        masks.append(row_mask)

    for raw in sequences:
        seq = list(raw)
        num_targets = len(seq) - 1
        if num_targets < 1:
            continue
        end = num_targets
        while end > max_len:
            add(seq, end, range(end - stride, end))
            end -= stride
        # The earliest window starts at the first item and counts what is left.
        add(seq, min(max_len, num_targets), range(0, end))

    if not inputs:
        empty = np.zeros((0, max_len), dtype=np.int64)
        return empty, empty.copy(), np.zeros((0, max_len), dtype=bool)
    return np.stack(inputs), np.stack(targets), np.stack(masks)
