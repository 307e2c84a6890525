"""What the pseudo-labels of a step look like, for the training log: boxes an image per branch,
and, where the unlabeled images keep their ground truth (the benchmarks' splits), precision and
recall per branch and whether box jitter keeps the better-placed boxes.

Every statistic is a pair ``(sum, weight)`` of tensors on the device: the trainer computes them on
logging steps only and reads all of them in one transfer
(:class:`softteacher.engine.step.DeviceScalars`), which logs sum / weight.
"""

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes, pairwise_iou

from .rpn import IGNORE

SCORE_BAND_EDGES = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)


def as_scalars(stats):
    """Pairs -> {name: sum / weight} as floats, leaving out those with no weight (for reading a
    step's statistics directly, as the tests and tools do)."""
    return {name: float(value) / float(weight) for name, (value, weight) in stats.items() if float(weight) > 0}


def match_counts(pred_boxes, pred_classes, gt_boxes, gt_classes, keep=None, iou_thresh=0.5):
    """(true positives, predictions, ground truths found) as tensors, class-aware at an IoU, of the
    predictions where ``keep`` (all by default), without reading anything back to the host."""
    keep = torch.ones(len(pred_boxes), dtype=torch.bool, device=pred_boxes.device) if keep is None else keep
    hit = (pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes)) >= iou_thresh) & (
        pred_classes[:, None] == gt_classes[None, :]
    ) & keep[:, None]
    return hit.any(1).sum(), keep.sum(), hit.any(0).sum()


def pseudo_label_quality(detections, ground_truth, branch, iou_thresh=0.5):
    """Summed (true positives, pseudo-boxes, ground truths found, ground truths) of one branch's
    pseudo-boxes over images, class-aware, at an IoU (tensors but the last, a count)."""
    tp = predicted = found = 0
    for d, gt in zip(detections, ground_truth):
        keep = d.get(f"keep_{branch}")
        t, p, f = match_counts(d.pred_boxes.tensor, d.pred_classes, gt.gt_boxes.tensor.to(keep.device),
                               gt.gt_classes.to(keep.device), keep, iou_thresh)
        tp, predicted, found = tp + t, predicted + p, found + f
    return tp, predicted, found, sum(len(gt) for gt in ground_truth)


def jitter_filter_iou(detections, ground_truth):
    """Mean IoU with the best same-class ground-truth box (0 when none) of the jittered
    pseudo-boxes box jitter passes for regression and of those it rejects, as (sum, count) pairs:
    whether the filter keeps the boxes that are better placed."""
    sums = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    for d, gt in zip(detections, ground_truth):
        gt_boxes = gt.gt_boxes.tensor.to(d.pred_boxes.tensor.device)
        iou = pairwise_iou(d.pred_boxes, Boxes(gt_boxes))
        same_class = d.pred_classes[:, None] == gt.gt_classes.to(d.pred_classes.device)[None, :]
        best = torch.cat([iou * same_class, iou.new_zeros(len(d), 1)], 1).max(dim=1).values
        jittered = d.uncertainty.isfinite()
        for passed in (True, False):
            group = (d.keep_reg == passed) & jittered
            sums[passed] = sums[passed] + (best * group).sum()
            counts[passed] = counts[passed] + group.sum()
    return {f"semi/jitter_iou_{name}": (sums[passed], counts[passed])
            for passed, name in ((True, "passing"), (False, "rejected"))}


def pseudo_label_statistics(thresholds, branches, class_names, unlabeled, detections, cls_targets):
    """The statistics a training step logs about its pseudo-labels (``semi/...``), as pairs."""
    stats = {}
    if thresholds.adaptive_scores is not None:
        for name, thresh in zip(class_names, thresholds.adaptive_scores.thresholds):
            stats[f"semi/score_thresh/{name}"] = (thresh, 1)
    num_images = len(unlabeled)
    has_gt = all("unlabeled_gt_instances" in u for u in unlabeled)
    ground_truth = [u.get("unlabeled_gt_instances") for u in unlabeled]
    for branch in branches:
        kept = sum(d.get(f"keep_{branch}").sum() for d in detections)
        stats[f"semi/pseudo_boxes_{branch}"] = (kept, num_images)
        if has_gt:
            tp, predicted, found, total = pseudo_label_quality(detections, ground_truth, branch)
            stats[f"semi/precision_{branch}"] = (tp, predicted)
            stats[f"semi/recall_{branch}"] = (found, total)
    if "reg" in branches:
        uncertainty = cat([d.uncertainty for d in detections])
        jittered = uncertainty.isfinite()
        passed = cat([d.keep_reg for d in detections]) & jittered
        stats["semi/jitter_pass_fraction"] = (passed.sum(), jittered.sum())
        median = torch.where(jittered, uncertainty, float("nan")).nanmedian()
        stats["semi/jitter_uncertainty_median"] = (median.nan_to_num(0.0), jittered.any())
        if thresholds.adaptive_uncertainty is not None:
            stats["semi/reg_uncertainty_thresh"] = (thresholds.current_reg_uncertainty_thresh, 1)
        if has_gt:
            stats.update(jitter_filter_iou(detections, ground_truth))
    if thresholds.ignore_uncertain:
        stats["semi/ignored_boxes_cls"] = (sum((t.gt_classes == IGNORE).sum() for t in cls_targets), num_images)
    return stats


def match_scores(gt_boxes, det_boxes, det_scores, iou_thresh=0.5):
    """(per object: the highest score among detections overlapping it by iou_thresh, 0 if none;
    per detection: whether it overlaps some object by iou_thresh)."""
    if len(det_scores) == 0 or len(gt_boxes) == 0:
        return torch.zeros(len(gt_boxes)), torch.zeros(len(det_scores), dtype=torch.bool)
    iou = pairwise_iou(Boxes(gt_boxes), Boxes(det_boxes))
    hits = iou >= iou_thresh
    best = (hits.float() * det_scores[None]).max(dim=1).values
    return best, hits.any(dim=0)


def score_band_table(object_scores, det_scores, det_true, num_images, edges=SCORE_BAND_EDGES):
    """Per band [edge, upper): objects' share, detections an image and their precision."""
    rows, upper = [], float("inf")
    for edge in edges:
        objects = (object_scores >= edge) & (object_scores < upper)
        dets = (det_scores >= edge) & (det_scores < upper)
        rows.append({
            "band": [edge, None if upper == float("inf") else upper],
            "objects": round(float(objects.float().mean()), 4),
            "detections_per_image": round(int(dets.sum()) / num_images, 3),
            "precision": round(float(det_true[dets].float().mean()), 3) if dets.any() else None,
        })
        upper = edge
    rows.append({"band": [0, edges[-1]], "objects": round(float((object_scores < edges[-1]).float().mean()), 4)})
    return rows
