"""Pictures of the teacher's pseudo-labels during training, without wandb.

Every ``SEMI.VIS_PERIOD`` iterations (and at the last one) the teacher labels the same few
unlabeled images (weak views, drawn once at the start). Each image gets one panel per loss branch:
RPN, ROI classification and ROI regression (box jitter) boxes in their own colour, ground truth
dashed when the unlabeled data has it. The picture goes to tensorboard (``pseudo_labels``) and to
``OUTPUT_DIR/pseudo_labels/iter_XXXXXXX.png``.
"""

import itertools
import logging
import os

import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..data import WeakStrongDatasetMapper
from ..datasets import dataset_class_names
from ..visualization import draw_box_layers, save_png, tile, titled, to_rgb

logger = logging.getLogger(__name__)

BRANCH_COLORS = {"rpn": (0, 130, 200), "cls": (245, 130, 48), "reg": (60, 180, 75)}
BRANCH_TITLES = {"rpn": "RPN", "cls": "classification", "reg": "regression (jitter)"}
GT_COLOR = (255, 255, 255)


def draw_pseudo_labels(weak_views, detections, ground_truth, branches, class_names, image_format, scale=2):
    """An RGB picture: a row per image, a panel per branch with its pseudo-boxes (class: score)
    and, when given, the ground truth dashed."""
    panels = []
    for view, det, gt in zip(weak_views, detections, ground_truth):
        base = to_rgb(view["image"], image_format)
        for branch in branches:
            layers = [] if gt is None else [(gt.gt_boxes.tensor.numpy(), GT_COLOR, None, True)]
            kept = det[det.get(f"keep_{branch}")]
            labels = [f"{class_names[c]}:{s:.2f}" for c, s in zip(kept.pred_classes.tolist(), kept.scores.tolist())]
            layers.append((kept.pred_boxes.tensor.numpy(), BRANCH_COLORS[branch], labels, False))
            panels.append(titled(draw_box_layers(base, layers, scale), f"{BRANCH_TITLES[branch]}: {len(kept)} boxes"))
    return tile(panels, cols=len(branches))


class PseudoLabelPicturesHook(HookBase):
    def __init__(self, cfg, pseudo_labeler, period, num_images):
        self.cfg = cfg
        self.pseudo_labeler = pseudo_labeler
        self.period = period
        self.num_images = num_images
        self.output_dir = os.path.join(cfg.OUTPUT_DIR, "pseudo_labels")
        self.views = None

    def before_train(self):
        if not comm.is_main_process():
            return
        dicts = get_detection_dataset_dicts(self.cfg.DATASETS.TRAIN_UNLABELED, filter_empty=False)
        mapper = WeakStrongDatasetMapper(self.cfg, is_train=True)
        views = (mapper(d) for d in dicts)  # None for an unreadable image: the next is drawn
        self.views = list(itertools.islice((v for v in views if v is not None), self.num_images)) or None
        self.class_names = dataset_class_names(self.cfg)  # an unlabeled image folder has none of its own
        os.makedirs(self.output_dir, exist_ok=True)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self.views is None or not (next_iter % self.period == 0 or next_iter == self.trainer.max_iter):
            return
        picture = self.draw()
        path = os.path.join(self.output_dir, f"iter_{self.trainer.iter:07d}.png")
        save_png(path, picture)
        self.trainer.storage.put_image("pseudo_labels", torch.from_numpy(picture).permute(2, 0, 1))
        logger.info("Pseudo-labels drawn to %s", path)

    def draw(self):
        weak = [v["weak"] for v in self.views]
        detections, _ = self.pseudo_labeler.label(weak)
        detections = [d.to("cpu") for d in detections]
        return draw_pseudo_labels(
            weak, detections, [v.get("unlabeled_gt_instances") for v in self.views],
            self.pseudo_labeler.branches, self.class_names, self.cfg.INPUT.FORMAT,
        )
