"""An RPN that can be told to leave some regions out of its loss.

Target boxes of class ``IGNORE`` (the teacher's uncertain detections, with
``SEMI.IGNORE_UNCERTAIN``) are neither objects nor background: anchors that overlap one by at
least the matcher's background bound (``MODEL.RPN.IOU_THRESHOLDS[0]``) and would be background
are dropped from the objectness loss. Without such boxes it is detectron2's ``RPN``.
"""

import torch
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, pairwise_iou

IGNORE = -1  # gt_classes of a region that is neither object nor background


@PROPOSAL_GENERATOR_REGISTRY.register()
class PseudoLabelRPN(RPN):
    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(self, anchors, gt_instances):
        ignored = [t.gt_classes == IGNORE if t.has("gt_classes") else None for t in gt_instances]
        if not any(i is not None and i.any() for i in ignored):
            return super().label_and_sample_anchors(anchors, gt_instances)
        objects = [t if i is None else t[~i] for t, i in zip(gt_instances, ignored)]
        gt_labels, matched_gt_boxes = super().label_and_sample_anchors(anchors, objects)
        all_anchors = Boxes.cat(anchors)
        background_bound = self.anchor_matcher.thresholds[1]
        for labels, targets, i in zip(gt_labels, gt_instances, ignored):
            if i is None or not i.any():
                continue
            near = pairwise_iou(targets.gt_boxes[i], all_anchors).max(dim=0).values >= background_bound
            labels[near & (labels == 0)] = -1
        return gt_labels, matched_gt_boxes
