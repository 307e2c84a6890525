"""MixPL's mixed pseudo-labels (opt-in): pixels and boxes of mosaics and mixups, the cache, and
the student's extra losses."""

import math
import random

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from softteacher import SoftTeacherTrainer
from softteacher.data import build_labeled_unlabeled_loader
from softteacher.modeling import PseudoLabeler
from softteacher.modeling.pseudo_mixing import PseudoLabelMixer, mixup, mosaic, transformed

from conftest import EVERY_DETECTION_IS_A_PSEUDO_BOX, soft_teacher_cfg


def view(h, w, value, boxes, classes=None):
    targets = Instances((h, w))
    targets.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    targets.gt_classes = torch.tensor(classes if classes is not None else [0] * len(targets.gt_boxes))
    return {"image": torch.full((1, h, w), float(value)), "targets": {"cls": targets}}


def boxes_of(v):
    return v["targets"]["cls"].gt_boxes.tensor.tolist()


def test_a_cached_view_shrinks_and_flips_with_its_boxes():
    v = view(4, 6, 1.0, [[1.0, 1.0, 3.0, 2.0]])
    v["image"][0, :, :3] = 5.0  # left half 5, right half 1
    small = transformed(v, 0.5)
    assert small["image"].shape == (1, 2, 3) and boxes_of(small) == [[0.5, 0.5, 1.5, 1.0]]
    flipped = transformed(v, 0.5, flip=True)
    assert boxes_of(flipped) == [[1.5, 0.5, 2.5, 1.0]]
    assert flipped["image"][0, 0].tolist() == [1.0, 3.0, 5.0]  # bilinear at the seam, then flipped


def test_a_mosaic_places_four_views_against_its_centre():
    views = [view(2, 3, 1, [[0, 0, 3, 2]]), view(3, 2, 2, [[0, 0, 1, 1]]),
             view(1, 1, 3, [[0, 0, 1, 1]]), view(2, 2, 4, [[1, 1, 2, 2]])]
    m = mosaic(views)
    assert m["image"].shape == (1, 6, 6)  # twice the largest height and width (3, 3)
    expected = torch.zeros(6, 6)
    expected[1:3, 0:3] = 1  # top-left: its bottom-right corner at the centre (3, 3)
    expected[0:3, 3:5] = 2  # top-right: bottom-left corner at the centre
    expected[3:4, 2:3] = 3  # bottom-left: top-right corner at the centre
    expected[3:5, 3:5] = 4  # bottom-right: top-left corner at the centre
    torch.testing.assert_close(m["image"][0], expected)
    assert boxes_of(m) == [[0, 1, 3, 3], [3, 0, 4, 1], [2, 3, 3, 4], [4, 4, 5, 5]]
    assert m["targets"]["cls"].image_size == (6, 6)


def test_a_mixup_averages_two_views_at_their_offsets_and_keeps_both_boxes():
    dst = view(2, 2, 2, [[0, 0, 1, 1]], [1])
    src = view(1, 3, 4, [[0, 0, 3, 1]], [2])
    m = mixup(dst, src, dst_offset=(1, 0), src_offset=(0, 1))
    torch.testing.assert_close(m["image"][0], torch.tensor([[0.0, 1.0, 1.0], [2.0, 3.0, 3.0]]))
    assert boxes_of(m) == [[1, 0, 2, 1], [0, 1, 3, 2]]
    assert m["targets"]["cls"].gt_classes.tolist() == [1, 2]


def test_the_mixer_mixes_only_from_a_full_cache_of_earlier_views():
    random.seed(0)
    mixer = PseudoLabelMixer(mosaic=True, mixup=True, cache_size=4, mosaic_scale=(0.5, 0.5))

    def step(value):
        vs = [view(8, 8, value, [[0, 0, 4, 4]]), view(8, 8, value, [[2, 2, 6, 6], [0, 0, 8, 8]])]
        return mixer([v["image"] for v in vs], {"cls": [v["targets"]["cls"] for v in vs]})

    assert step(1.0) == {} and step(2.0) == {}  # cache: 2, then 4 views
    mixed = step(3.0)
    assert [img["image"].shape for img in mixed["mosaic"]["images"]] == [(1, 8, 8)]  # four 4x4 tiles
    assert len(mixed["mosaic"]["cls_targets"][0]) in range(4, 9)  # 1 or 2 boxes from each tile
    assert mixed["mosaic"]["rpn_targets"] is None and mixed["mosaic"]["weight"] == 0.5
    # each of this step's views (3.0) half and half with a cached one (1.0 or 2.0)
    for img, targets, own in zip(mixed["mixup"]["images"], mixed["mixup"]["cls_targets"], (1, 2)):
        assert img["image"].shape == (1, 8, 8)
        assert set(img["image"].unique().tolist()) <= {2.0, 2.5}
        assert len(targets) - own in (1, 2)
    assert [v["image"][0, 0, 0].item() for v in mixer.cache] == [2.0, 2.0, 3.0, 3.0]


def test_the_student_adds_a_weighted_loss_per_mixed_pass_with_background_weight_one(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX,
                           **{"SEMI.PSEUDO_MIXING.MOSAIC": "True", "SEMI.PSEUDO_MIXING.MIXUP": "True",
                              "SEMI.PSEUDO_MIXING.CACHE_SIZE": "4"})
    torch.manual_seed(0)
    student = build_model(cfg)
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    teacher.load_state_dict(student.state_dict())
    labeler = PseudoLabeler(cfg, teacher)
    batches = iter(build_labeled_unlabeled_loader(cfg))
    seen = []
    weighted = student.roi_heads.box_predictor.weighted_cls_loss

    def spy(scores, gt_classes, weights):
        loss = weighted(scores, gt_classes, weights)
        seen.append((gt_classes, weights, loss))
        return loss

    student.roi_heads.box_predictor.weighted_cls_loss = spy
    with EventStorage(0):
        for _ in range(2):  # two unlabeled views a step: the cache of 4 is full after two steps
            labeled, unlabeled = next(batches)
            inputs, _ = labeler(unlabeled)
            assert inputs["mixed"] == {}
        labeled, unlabeled = next(batches)
        inputs, _ = labeler(unlabeled)
        losses = student(labeled, unlabeled=inputs)
    for kind in ("mosaic", "mixup"):
        for name in ("loss_rpn_cls", "loss_cls", "loss_box_reg"):
            value = losses[f"unsup_{kind}_{name}"].item()
            assert math.isfinite(value) and value > 0
    assert len(seen) == 3  # the strong views, the mosaic, the mixups
    (main_classes, main_weights, main_loss), *mixed_calls = seen
    background = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert (main_weights[main_classes == background] < 1).any()  # the soft teacher's weights
    assert losses["unsup_loss_cls"].item() == main_loss.item()
    for kind, (gt_classes, weights, loss) in zip(("mosaic", "mixup"), mixed_calls):
        assert (gt_classes == background).any() and (weights == 1).all()
        assert losses[f"unsup_{kind}_loss_cls"].item() == 0.5 * loss.item()  # MOSAIC_WEIGHT, MIXUP_WEIGHT


def test_every_mixed_box_lies_on_its_own_pixels_through_random_flips_and_scales():
    """Asymmetric views (a bright block off-centre, where its box is): a box that does not move
    with its pixels (a flip of the image alone, say) lands on dark canvas."""
    random.seed(3)
    mixer = PseudoLabelMixer(mosaic=True, mixup=True, cache_size=4, mosaic_scale=(0.5, 1.0))

    def asymmetric(corner):
        x0, y0 = corner
        v = view(24, 32, 0.0, [[x0, y0, x0 + 8, y0 + 6]])
        v["image"][0, y0:y0 + 6, x0:x0 + 8] = 10.0
        return v

    checked = {"mosaic": 0, "mixup": 0}
    for step in range(12):
        vs = [asymmetric((2 + step % 3, 3)), asymmetric((20, 15 - step % 4))]
        mixed = mixer([v["image"] for v in vs], {"cls": [v["targets"]["cls"] for v in vs]})
        for kind, least in (("mosaic", 9.0), ("mixup", 4.9)):  # a mixup halves every pixel
            for img, targets in zip(mixed.get(kind, {}).get("images", []), mixed.get(kind, {}).get("cls_targets", [])):
                for x0, y0, x1, y1 in targets.gt_boxes.tensor.tolist():
                    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
                    assert img["image"][0, cy, cx] >= least, (kind, step, (x0, y0, x1, y1))
                    checked[kind] += 1
    assert checked["mosaic"] >= 20 and checked["mixup"] >= 10


def test_canvases_are_padded_and_blended_at_the_pixel_mean_not_black():
    mean = torch.tensor([103.5, 116.3, 123.7])
    tile = {"image": torch.full((3, 2, 2), 200.0), "targets": view(2, 2, 0, [[0, 0, 1, 1]])["targets"]}
    m = mosaic([tile] * 4, fill=mean)
    torch.testing.assert_close(m["image"][:, 1, 1], torch.full((3,), 200.0))  # covered
    m = mosaic([tile, tile, tile, {**tile, "image": torch.full((3, 1, 1), 200.0)}], fill=mean)
    # a 4x4 canvas around (2, 2): the 1x1 bottom-right tile covers (2, 2) only
    torch.testing.assert_close(m["image"][:, 2, 2], torch.full((3,), 200.0))
    torch.testing.assert_close(m["image"][:, 3, 3], mean)  # uncovered: the mean colour
    small = {"image": torch.full((3, 1, 2), 50.0), "targets": view(1, 2, 0, [[0, 0, 1, 1]])["targets"]}
    mixed = mixup(tile, small, fill=mean)["image"]
    torch.testing.assert_close(mixed[:, 0, 0], torch.full((3,), 125.0))  # both: 0.5 * 200 + 0.5 * 50
    torch.testing.assert_close(mixed[:, 1, 0], 0.5 * 200.0 + 0.5 * mean)  # dst only: halved towards the mean


def test_erasing_fills_patches_with_the_mean_and_drops_boxes_mostly_covered():
    from softteacher.modeling.pseudo_mixing import erased

    v = view(10, 10, 200.0, [[0, 0, 4, 4], [4, 4, 8, 8], [6, 6, 10, 10]], [0, 1, 2])
    # (0, 0)-(5, 5) covers box 0 whole and one of box 1's 16 pixels; (6, 6)-(9, 10) covers 12 of box 2's 16
    out = erased(v, [(0, 0, 5, 5), (6, 6, 9, 10)], fill=100.0, drop=0.7)
    assert out["targets"]["cls"].gt_classes.tolist() == [1]  # 1.0 and 0.75 covered: dropped; 0.0625: kept
    assert out["image"][0, 0, 0] == 100.0 and out["image"][0, 9, 8] == 100.0 and out["image"][0, 5, 5] == 200.0
    assert erased(v, [(6, 6, 9, 10)], drop=0.8)["targets"]["cls"].gt_classes.tolist() == [0, 1, 2]  # 0.75 < 0.8
