"""Box jitter: how uncertain the teacher is of where a pseudo-box lies.

Each pseudo-box is copied ``times`` times with every coordinate offset by N(0, 1) * ``scale`` *
(box width for x, height for y; sizes clamped >= 1). The teacher's ROI head refines all copies of
all boxes of all images in one call. The jitter uncertainty of a box is the mean over its 4 coordinates
of std(refined coordinate) / (mean refined width for x, height for y, clamped >= 1), the std with
Bessel's correction, as the original code computes it. Boxes below the threshold train box
regression; their targets stay the teacher's detections, not the jitter mean.
"""

import torch


def jitter_boxes(boxes, times, scale):
    """(N, 4) XYXY boxes -> (N, times, 4) jittered copies."""
    sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0).repeat(1, 2)  # (w, h, w, h)
    noise = torch.randn(boxes.shape[0], times, 4, device=boxes.device, dtype=boxes.dtype)
    return boxes[:, None, :] + noise * scale * sizes[:, None, :]


def box_uncertainty(refined):
    """(N, times, 4) refined copies -> (N,) mean relative std (lower: the teacher is surer)."""
    if refined.shape[0] == 0:
        return refined.new_zeros(0)
    mean = refined.mean(dim=1)
    sizes = (mean[:, 2:] - mean[:, :2]).clamp(min=1.0).repeat(1, 2)
    return (refined.std(dim=1) / sizes).mean(dim=1)


def jitter_uncertainty(refine, boxes_per_image, classes_per_image, times, scale):
    """Jitter uncertainty of every image's pseudo-boxes, with one call of ``refine``.

    Args:
        refine: callable(list of (M_i, 4) boxes, list of (M_i,) classes) -> list of (M_i, 4)
            refined boxes, for all images at once (the teacher's ROI head).
        boxes_per_image, classes_per_image: pseudo-boxes (N_i, 4) and their classes (N_i,).
    Returns:
        list of (N_i,) uncertainties.
    """
    counts = [len(b) for b in boxes_per_image]
    jittered = [jitter_boxes(b, times, scale).reshape(-1, 4) for b in boxes_per_image]
    classes = [c.repeat_interleave(times) for c in classes_per_image]
    refined = refine(jittered, classes)
    return [box_uncertainty(r.reshape(n, times, 4)) for r, n in zip(refined, counts)]
