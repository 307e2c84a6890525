"""The student: a ``GeneralizedRCNN`` that also learns from pseudo-labelled strong views.

Both the labeled and the unlabeled pass run inside one ``forward`` so that DistributedDataParallel
sees a single forward per step. When the teacher gave no pseudo-box for any branch, the unlabeled
pass is skipped and its losses are zeros: unlabeled images then carry no signal (this is what
happens early in training), and every parameter still gets a gradient from the labeled pass, so
ranks stay in step. With no ``unlabeled`` argument, and in eval mode, it is exactly
detectron2's ``GeneralizedRCNN`` (same parameters, same checkpoints).

With ``SEMI.ONE_PASS_STUDENT`` the labeled images and the strong views go through the backbone as
one batch (one pass, half the backbone launches); the heads still see each group alone. A
backbone without batch statistics (frozen batch norm, GroupNorm) gives every image the features
it would get in its own group's pass, except that the batch is padded to the largest image of
both groups: where both groups pad to the same size the losses and gradients are those of two
passes.
"""

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage

from .pseudo_mixing import hard_background


@META_ARCH_REGISTRY.register()
class SemiSupervisedRCNN(GeneralizedRCNN):
    @configurable
    def __init__(self, *, one_pass_student=False, **kwargs):
        """
        Args:
            one_pass_student: one backbone pass over the labeled images and the strong views.
        """
        super().__init__(**kwargs)
        self.one_pass_student = one_pass_student

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["one_pass_student"] = cfg.SEMI.ONE_PASS_STUDENT
        return ret

    def forward(self, batched_inputs, unlabeled=None):
        """
        Args:
            batched_inputs: labeled images in detectron2's format (or images to predict).
            unlabeled: None, or the pseudo-labelled strong views as made by
                :class:`softteacher.modeling.PseudoLabeler` (``images``, ``rpn_targets``,
                ``cls_targets``, ``reg_targets``, ``background_probs``, ``statistics``: a dict the
                ROI heads add their statistics to, ``teacher_predictions``, and ``mixed``: views
                made by :class:`softteacher.modeling.pseudo_mixing.PseudoLabelMixer`).
        Returns:
            in training, supervised losses and, with ``unlabeled``, the unsupervised ones with
            an ``unsup_`` prefix (unweighted).
        """
        if not self.training or unlabeled is None:
            return super().forward(batched_inputs)
        unlabeled = dict(unlabeled)
        mixed = unlabeled.pop("mixed", {})
        if self.one_pass_student and _has_pseudo_boxes(unlabeled["rpn_targets"], unlabeled["cls_targets"],
                                                       unlabeled["reg_targets"]):
            losses, unsupervised = self._one_pass_losses(batched_inputs, unlabeled)
        else:
            losses = super().forward(batched_inputs)
            unsupervised = self.unsupervised_losses(**unlabeled)
        losses.update({f"unsup_{name}": value for name, value in unsupervised.items()})
        for kind, inputs in mixed.items():  # mixed pseudo-labelled views, each pass its own loss
            inputs = dict(inputs)
            weight = inputs.pop("weight")
            mixed_losses = self.unsupervised_losses(**inputs, background_probs=hard_background)
            losses.update({f"unsup_{kind}_{name}": value * weight for name, value in mixed_losses.items()})
        return losses

    def unsupervised_losses(self, images, rpn_targets, cls_targets, reg_targets, background_probs, statistics=None,
                            teacher_predictions=None):
        """The unsupervised losses of the strong views ``images`` in a pass of their own."""
        if not _has_pseudo_boxes(rpn_targets, cls_targets, reg_targets):
            return self._no_unsupervised_losses(reg_targets is not None)
        images = self.preprocess_image(images)
        features = self.backbone(images.tensor)
        return self._strong_view_losses(images, features, rpn_targets, cls_targets, reg_targets, background_probs,
                                        statistics, teacher_predictions)

    def _strong_view_losses(self, images, features, rpn_targets, cls_targets, reg_targets, background_probs,
                            statistics=None, teacher_predictions=None):
        proposals, rpn_losses = self.proposal_generator(images, features, rpn_targets)
        roi_losses = self.roi_heads.unsupervised_losses(
            features, proposals, cls_targets, reg_targets, background_probs, statistics, teacher_predictions
        )
        return {**rpn_losses, **roi_losses}

    def _one_pass_losses(self, batched_inputs, unlabeled):
        """(supervised, unsupervised) losses from one backbone pass over both groups."""
        count = len(batched_inputs)
        images = self.preprocess_image(list(batched_inputs) + list(unlabeled["images"]))
        features = self.backbone(images.tensor)
        labeled_images = ImageList(images.tensor[:count], images.image_sizes[:count])
        strong_images = ImageList(images.tensor[count:], images.image_sizes[count:])
        labeled_features = {name: f[:count] for name, f in features.items()}
        strong_features = {name: f[count:] for name, f in features.items()}
        targets = {k: v for k, v in unlabeled.items() if k != "images"}
        return (self._labeled_losses(batched_inputs, labeled_images, labeled_features),
                self._strong_view_losses(strong_images, strong_features, **targets))

    def _labeled_losses(self, batched_inputs, images, features):
        """``GeneralizedRCNN``'s training losses from features already computed."""
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        return {**detector_losses, **proposal_losses}

    def _no_unsupervised_losses(self, with_regression):
        names = ["loss_rpn_cls", "loss_rpn_loc", "loss_cls"] + (["loss_box_reg"] if with_regression else [])
        return {name: torch.zeros((), device=self.device) for name in names}


def _has_pseudo_boxes(rpn_targets, cls_targets, reg_targets):
    branches = [rpn_targets, cls_targets] + ([reg_targets] if reg_targets is not None else [])
    return any(len(t) for targets in branches for t in targets)
