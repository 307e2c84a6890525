"""Shared by the data pipeline and the model: boxes through the affine map between two views of an
image, and per-image selections from a batch with few host synchronisations."""

import itertools

import numpy as np
import torch
from detectron2.layers import cat


def map_boxes(matrix, boxes, height=None, width=None):
    """Map Nx4 XYXY boxes through a 3x3 affine matrix, or an Nx3x3 stack (one per box): the four
    corners, then their enclosing box, clipped to (height, width) when given (numbers, or N values
    for one size per box). Takes and returns a torch tensor or a numpy array."""
    if not isinstance(boxes, torch.Tensor):
        return map_boxes(matrix, torch.as_tensor(boxes, dtype=torch.float64), height, width).numpy()
    m = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, torch.Tensor) else matrix).to(boxes)
    m = m.expand(len(boxes), 3, 3)
    x0, y0, x1, y1 = boxes.unbind(1)
    corners_x = torch.stack([x0, x1, x0, x1], 1)
    corners_y = torch.stack([y0, y0, y1, y1], 1)
    tx = m[:, 0, :1] * corners_x + m[:, 0, 1:2] * corners_y + m[:, 0, 2:]
    ty = m[:, 1, :1] * corners_x + m[:, 1, 1:2] * corners_y + m[:, 1, 2:]
    out = torch.stack([tx.amin(1), ty.amin(1), tx.amax(1), ty.amax(1)], 1)
    if height is not None:
        limits = torch.stack(torch.broadcast_tensors(*(torch.as_tensor(v).to(boxes) for v in (width, height))), -1)
        out = torch.minimum(out.clamp(min=0), limits.reshape(-1, 2).repeat(1, 2))
    return out


def turned(matrices, eps=1e-6):
    """Which (N, 3, 3) affine maps rotate or shear (move a box off the axes)."""
    return (matrices[:, 0, 1].abs() > eps) | (matrices[:, 1, 0].abs() > eps)


def image_index(counts, device):
    """The image each box of a concatenation belongs to, from the per-image box counts."""
    return torch.repeat_interleave(torch.arange(len(counts), device=device), torch.as_tensor(counts, device=device),
                                   output_size=sum(counts))


def where_per_group(masks):
    """Per (N_i,) mask of a list, the long indices where it is true, with two host
    synchronisations for the whole list (one ``nonzero``, one read of the counts) instead of one
    per mask and field."""
    if not masks:
        return []
    counts = [len(m) for m in masks]
    flat = cat([m.reshape(-1) for m in masks]).nonzero().squeeze(1)
    found = torch.bincount(image_index(counts, flat.device)[flat], minlength=len(masks)).tolist()
    offsets = itertools.accumulate([0, *counts[:-1]])
    return [part - offset for part, offset in zip(flat.split(found), offsets)]
