"""An RPN that can be told to leave some regions out of its loss.

Target boxes of class ``IGNORE`` (the teacher's uncertain detections, with
``SEMI.IGNORE_UNCERTAIN``) are neither objects nor background: anchors that overlap one by at
least the matcher's background bound (``MODEL.RPN.IOU_THRESHOLDS[0]``) and would be background
are taken out before the anchors are sampled, so the whole sampling budget
(``MODEL.RPN.BATCH_SIZE_PER_IMAGE``) goes to objects and true background. Without such boxes it is
detectron2's ``RPN``.
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
        all_anchors = Boxes.cat(anchors)
        background_bound = self.anchor_matcher.thresholds[1]
        # per image, in the order detectron2 labels them: the anchors near an ignored region,
        # read by _subsample_labels between labelling and sampling
        self._near_ignored = iter([
            None if i is None or not i.any()
            else pairwise_iou(t.gt_boxes[i], all_anchors).max(dim=0).values >= background_bound
            for t, i in zip(gt_instances, ignored)
        ])
        objects = [t if i is None else t[~i] for t, i in zip(gt_instances, ignored)]
        try:
            return super().label_and_sample_anchors(anchors, objects)
        finally:
            del self._near_ignored

    def _subsample_labels(self, label):
        near = next(self._near_ignored, None) if hasattr(self, "_near_ignored") else None
        if near is not None:
            label[near & (label == 0)] = -1
        return super()._subsample_labels(label)
