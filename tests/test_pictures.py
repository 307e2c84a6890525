"""Pseudo-label pictures and training curves: what is drawn where, and what the curves read."""

import os

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from softteacher.engine import draw_pseudo_labels, plot_training_curves
from softteacher.engine.pseudo_label_pictures import BRANCH_COLORS, GT_COLOR
from softteacher.engine.training_curves import evaluated_ap

PAD, TITLE, SCALE = 4, 16, 2  # tile padding, title strip, enlargement of the pictures


def one_image_detections():
    det = Instances((20, 30))
    det.pred_boxes = Boxes(torch.tensor([[2.0, 3.0, 10.0, 12.0]]))
    det.pred_classes = torch.tensor([1])
    det.scores = torch.tensor([0.95])
    det.keep_rpn = torch.tensor([True])
    det.keep_cls = torch.tensor([False])
    det.keep_reg = torch.tensor([True])
    gt = Instances((20, 30))
    gt.gt_boxes = Boxes(torch.tensor([[15.0, 2.0, 28.0, 18.0]]))
    return det, gt


def panel_region(picture, column, x0, x1, y0, y1, panel_width=30 * SCALE):
    """The pixels of a first-row panel between weak-view coordinates (x0, y0) and (x1, y1)."""
    left, top = PAD + column * (panel_width + PAD), PAD + TITLE
    return picture[top + y0 * SCALE: top + y1 * SCALE, left + x0 * SCALE: left + x1 * SCALE].reshape(-1, 3)


def near(pixels, color, tolerance=40):
    """Which pixels are within ``tolerance`` of ``color`` (the Visualizer antialiases edges)."""
    return np.abs(pixels.astype(int) - np.array(color)).max(axis=1) <= tolerance


def test_each_branch_panel_shows_its_own_boxes_in_its_colour_and_the_ground_truth_dashed():
    det, gt = one_image_detections()
    view = {"image": torch.zeros(3, 20, 30, dtype=torch.uint8)}
    picture = draw_pseudo_labels([view], [det], [gt], ("rpn", "cls", "reg"), ["a", "b"], "BGR", scale=SCALE)
    assert picture.shape == (PAD + TITLE + 20 * SCALE + PAD, PAD + 3 * (30 * SCALE + PAD), 3)
    # the box's left edge, x = 2, below its label: drawn in the RPN and regression panels only
    edge = {column: panel_region(picture, column, 1, 3, 8, 12) for column in range(3)}
    assert near(edge[0], BRANCH_COLORS["rpn"]).any() and near(edge[2], BRANCH_COLORS["reg"]).any()
    assert edge[1].max() < 30  # not a classification pseudo-box: nothing drawn there
    assert not near(edge[0], BRANCH_COLORS["reg"]).any()
    # ground truth in every panel, dashed: its top edge (y = 2) is drawn, then broken
    for column in range(3):
        top_edge = panel_region(picture, column, 16, 27, 2, 3)
        assert 0.2 < near(top_edge, GT_COLOR, tolerance=60).mean() < 0.8


def test_curves_read_every_evaluation_at_its_iteration_and_are_saved(tmp_path):
    with EventStorage(0) as storage:
        for it in range(40):
            storage.iter = it
            storage.put_scalar("semi/precision_rpn", 0.5 + it / 100)
            storage.put_scalar("semi/recall_rpn", 0.2)
            if it in (19, 39):
                storage.put_scalars(**{"teacher/bbox/AP": it / 2, "student/bbox/AP": it / 4}, smoothing_hint=False)
        assert evaluated_ap(storage) == {"teacher": [(20, 9.5), (40, 19.5)], "student": [(20, 4.75), (40, 9.75)]}
        # the final evaluation is logged at MAX_ITER itself: never counted past it
        assert evaluated_ap(storage, max_iter=39)["teacher"] == [(20, 9.5), (39, 19.5)]
        path = os.path.join(tmp_path, "curves.png")
        plot_training_curves(path, storage)
    image = cv2.imread(path)
    assert image is not None and image.shape[1] > image.shape[0]  # two panels side by side
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10
