"""Helping people label: the teacher's pseudo-labels as pre-annotations, and what to label next.

Both run the teacher as training does (:class:`~softteacher.modeling.PseudoLabeler`: train-time
proposals, test-time post-processing, box jitter) on each image at its test-time size, and map the
boxes back to the original image.

What to label next: an image is worth labeling when the teacher is unsure about many objects in it.
Its uncertainty is the sum, over the teacher's detections, of the binary entropy of the score
(in bits: 1 at 0.5, 0.47 at 0.1 or 0.9, 0 at 0 or 1). A confident detection or a clear rejection
adds almost nothing, a coin-flip box adds most, and an image with several doubtful objects ranks
above an image with one: labeling it gives the most boxes the model could not have given itself.
"""

import torch

from .inference import progress
from .modeling import BRANCHES, PseudoLabeler

# detections the pseudo-labeller returns for ranking: everything the ROI head's test-time
# post-processing keeps (MODEL.ROI_HEADS.SCORE_THRESH_TEST), not only those above the 0.5 cut
ALL_DETECTIONS = 0.0
UNCERTAIN_ENTROPY = 0.469  # binary entropy at a score of 0.1 or 0.9: boxes drawn on the contact sheet


def binary_entropy(scores):
    """Entropy in bits of a yes/no with probability ``scores`` (a tensor)."""
    p = scores.clamp(1e-6, 1 - 1e-6)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def saved_labeler_state(weights):
    """The adaptive thresholds a training checkpoint saved (empty for other files): the tools
    label with the thresholds training had reached."""
    if not weights.endswith(".pth"):
        return {}
    return torch.load(weights, map_location="cpu", weights_only=True).get("pseudo_labeler", {})


def teacher_pseudo_labels(cfg, model, records, reader, min_score=None, seed=0):
    """Yield ``(record, inputs, detections)`` per readable image: the pseudo-labeller's
    ``Instances`` (boxes in original-image pixels, ``scores``, ``pred_classes``, ``keep_{branch}``
    and, with box jitter, ``uncertainty``), with detections above ``min_score`` (default
    ``SEMI.PSEUDO_SCORE_THRESH``, as in training). Box jitter's noise is seeded with ``seed``:
    the same images give the same uncertainties."""
    score_thresh = cfg.SEMI.PSEUDO_SCORE_THRESH
    labeler = PseudoLabeler(
        cfg, model,
        ignore_uncertain=False,  # ignored regions are training targets, not boxes to annotate
        score_thresh=score_thresh if min_score is None else min(min_score, score_thresh),
    )
    labeler.load_state_dict(saved_labeler_state(cfg.MODEL.WEIGHTS))
    torch.manual_seed(seed)
    for record in progress(records, "teacher"):
        inputs = reader(record)
        if inputs is None:
            continue
        detections, _ = labeler.label([inputs])
        d = detections[0].to("cpu")
        if d.has("keep_reg"):  # training never regresses to a box under the pseudo-label cut
            d.keep_reg = d.keep_reg & (d.scores > score_thresh)
        resized_h, resized_w = inputs["image"].shape[1:]
        d.pred_boxes.scale(inputs["width"] / resized_w, inputs["height"] / resized_h)
        yield record, inputs, d


def branches_of(detections):
    return [b for b in BRANCHES if detections.has(f"keep_{b}")]


def coco_pre_annotations(results, class_ids, class_names):
    """A COCO json (dict) of pseudo-labels for annotation tools: every box with its class, score,
    jitter uncertainty and the loss branches that would use it (also as CVAT-style
    ``attributes``). ``results``: ``(record, inputs, detections)`` as yielded above."""
    images, annotations = [], []
    for record, inputs, d in results:
        images.append({"id": record["image_id"], "file_name": record["rel_name"],
                       "width": inputs["width"], "height": inputs["height"]})
        branches = branches_of(d)
        for i in range(len(d)):
            x0, y0, x1, y1 = (round(v, 2) for v in d.pred_boxes.tensor[i].tolist())
            used_by = [b for b in branches if bool(d.get(f"keep_{b}")[i])]
            attributes = {"score": round(float(d.scores[i]), 4), "used_by": ",".join(used_by)}
            if d.has("uncertainty"):
                attributes["jitter_uncertainty"] = round(float(d.uncertainty[i]), 5)
            annotations.append({
                "id": len(annotations) + 1, "image_id": record["image_id"],
                "category_id": class_ids[int(d.pred_classes[i])],
                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round((x1 - x0) * (y1 - y0), 2), "iscrowd": 0,
                **attributes, "attributes": attributes,
            })
    categories = [{"id": class_ids[i], "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def image_uncertainty(detections):
    """(uncertainty of the image, per-box entropies): see the module's docstring."""
    entropy = binary_entropy(detections.scores)
    return float(entropy.sum()), entropy


def rank_images(results, class_names):
    """Entries ``{"image_id", "file_name", "uncertainty", "detections", "uncertain_boxes"}``, most
    uncertain first (ties: file name). ``uncertain_boxes`` are those scored between 0.1 and 0.9."""
    entries = []
    for record, inputs, d in results:
        total, entropy = image_uncertainty(d)
        uncertain = [
            {"bbox_xyxy": [round(v, 1) for v in d.pred_boxes.tensor[i].tolist()],
             "class": class_names[int(d.pred_classes[i])], "score": round(float(d.scores[i]), 3),
             **({"jitter_uncertainty": round(float(d.uncertainty[i]), 4)} if d.has("uncertainty") else {})}
            for i in range(len(d)) if entropy[i] >= UNCERTAIN_ENTROPY
        ]
        entries.append({
            "image_id": record["image_id"], "file_name": record["file_name"],
            "uncertainty": round(total, 4),
            "detections": len(d), "uncertain_boxes": uncertain,
        })
    entries.sort(key=lambda e: (-e["uncertainty"], e["file_name"]))
    return entries
