"""What the pseudo-labels of a step look like, for the training log: boxes an image per branch,
and, where the unlabeled images keep their ground truth (the benchmarks' splits), precision and
recall per branch and whether box jitter keeps the better-placed boxes."""

import numpy as np
import torch
from detectron2.layers import cat
from detectron2.structures import Boxes, pairwise_iou

from .rpn import IGNORE

SCORE_BAND_EDGES = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)


def match_counts(pred_boxes, pred_classes, gt_boxes, gt_classes, iou_thresh=0.5):
    """(true positives, predictions, ground truths found, ground truths) at an IoU, class-aware."""
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return 0, len(pred_boxes), 0, len(gt_boxes)
    hit = (pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes)) >= iou_thresh) & (
        pred_classes[:, None] == gt_classes[None, :]
    )
    return int(hit.any(1).sum()), len(pred_boxes), int(hit.any(0).sum()), len(gt_boxes)


def pseudo_label_quality(detections, ground_truth, branch, iou_thresh=0.5):
    """Summed (true positives, pseudo-boxes, ground truths found, ground truths) of one branch's
    pseudo-boxes over images, class-aware, at an IoU."""
    counts = np.zeros(4, dtype=np.int64)
    for d, gt in zip(detections, ground_truth):
        keep = d.get(f"keep_{branch}")
        counts += match_counts(
            d.pred_boxes.tensor[keep], d.pred_classes[keep],
            gt.gt_boxes.tensor.to(keep.device), gt.gt_classes.to(keep.device), iou_thresh,
        )
    return tuple(int(c) for c in counts)


def jitter_filter_iou(detections, ground_truth):
    """Mean IoU with the best same-class ground-truth box (0 when none) of the jittered
    pseudo-boxes box jitter passes for regression and of those it rejects: whether the filter keeps
    the boxes that are better placed. Keys are left out when a group is empty."""
    ious = {True: [], False: []}
    for d, gt in zip(detections, ground_truth):
        if len(d) == 0:
            continue
        gt_boxes = gt.gt_boxes.tensor.to(d.pred_boxes.tensor.device)
        iou = pairwise_iou(d.pred_boxes, Boxes(gt_boxes)) if len(gt_boxes) else d.scores.new_zeros(len(d), 0)
        same_class = d.pred_classes[:, None] == gt.gt_classes.to(d.pred_classes.device)[None, :]
        best = (iou * same_class).max(dim=1).values if iou.shape[1] else d.scores.new_zeros(len(d))
        jittered = d.uncertainty.isfinite()
        for passed in (True, False):
            ious[passed].append(best[(d.keep_reg == passed) & jittered])
    out = {}
    for passed, name in ((True, "passing"), (False, "rejected")):
        values = torch.cat(ious[passed]) if ious[passed] else torch.zeros(0)
        if len(values):
            out[f"semi/jitter_iou_{name}"] = values.float().mean().item()
    return out


def pseudo_label_statistics(thresholds, branches, class_names, unlabeled, detections, cls_targets):
    """The scalars a training step logs about its pseudo-labels (``semi/...``)."""
    stats = {}
    if thresholds.adaptive_scores is not None:
        for name, thresh in zip(class_names, thresholds.adaptive_scores.thresholds.tolist()):
            stats[f"semi/score_thresh/{name}"] = thresh
    num_images = max(len(unlabeled), 1)
    has_gt = all("unlabeled_gt_instances" in u for u in unlabeled)
    ground_truth = [u.get("unlabeled_gt_instances") for u in unlabeled]
    for branch in branches:
        kept = sum(int(d.get(f"keep_{branch}").sum()) for d in detections)
        stats[f"semi/pseudo_boxes_{branch}"] = kept / num_images
        if not has_gt:
            continue
        tp, predicted, found, total = pseudo_label_quality(detections, ground_truth, branch)
        if predicted > 0:
            stats[f"semi/precision_{branch}"] = tp / predicted
        if total > 0:
            stats[f"semi/recall_{branch}"] = found / total
    if "reg" in branches:
        uncertainty = cat([d.uncertainty for d in detections])
        jittered = uncertainty.isfinite()
        if jittered.any():
            passed = cat([d.keep_reg for d in detections])[jittered]
            stats["semi/jitter_pass_fraction"] = passed.float().mean().item()
            stats["semi/jitter_uncertainty_median"] = uncertainty[jittered].median().item()
        if thresholds.adaptive_uncertainty is not None:
            stats["semi/reg_uncertainty_thresh"] = thresholds.current_reg_uncertainty_thresh
        if has_gt:
            stats.update(jitter_filter_iou(detections, ground_truth))
    if thresholds.ignore_uncertain:
        ignored = sum(int((t.gt_classes == IGNORE).sum()) for t in cls_targets)
        stats["semi/ignored_boxes_cls"] = ignored / num_images
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
