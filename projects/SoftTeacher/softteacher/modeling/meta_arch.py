"""The student: a ``GeneralizedRCNN`` that also learns from pseudo-labelled strong views.

Both the labeled and the unlabeled pass run inside one ``forward`` so that DistributedDataParallel
sees a single forward per step. When the teacher gave no pseudo-box for any branch, the unlabeled
pass is skipped and its losses are zeros: unlabeled images then carry no signal (this is what
happens early in training), and every parameter still gets a gradient from the labeled pass, so
ranks stay in step. With no ``unlabeled`` argument, and in eval mode, it is exactly
detectron2's ``GeneralizedRCNN`` (same parameters, same checkpoints).
"""

import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN


@META_ARCH_REGISTRY.register()
class SemiSupervisedRCNN(GeneralizedRCNN):
    def forward(self, batched_inputs, unlabeled=None):
        """
        Args:
            batched_inputs: labeled images in detectron2's format (or images to predict).
            unlabeled: None, or the pseudo-labelled strong views as made by
                :class:`softteacher.modeling.PseudoLabeler` (``images``, ``rpn_targets``,
                ``cls_targets``, ``reg_targets``, ``background_probs``, ``statistics``: a dict the
                ROI heads add their statistics to).
        Returns:
            in training, supervised losses and, with ``unlabeled``, the unsupervised ones with
            an ``unsup_`` prefix (unweighted).
        """
        if not self.training or unlabeled is None:
            return super().forward(batched_inputs)
        losses = super().forward(batched_inputs)
        unsupervised = self.unsupervised_losses(**unlabeled)
        losses.update({f"unsup_{name}": value for name, value in unsupervised.items()})
        return losses

    def unsupervised_losses(self, images, rpn_targets, cls_targets, reg_targets, background_probs, statistics=None):
        branches = [rpn_targets, cls_targets] + ([reg_targets] if reg_targets is not None else [])
        if not any(len(t) for targets in branches for t in targets):
            names = ["loss_rpn_cls", "loss_rpn_loc", "loss_cls"]
            names += ["loss_box_reg"] if reg_targets is not None else []
            return {name: torch.zeros((), device=self.device) for name in names}
        images = self.preprocess_image(images)
        features = self.backbone(images.tensor)
        proposals, rpn_losses = self.proposal_generator(images, features, rpn_targets)
        roi_losses = self.roi_heads.unsupervised_losses(
            features, proposals, cls_targets, reg_targets, background_probs, statistics
        )
        return {**rpn_losses, **roi_losses}
