"""The warning when the teacher passes no pseudo-box: when it fires, once, and what it says."""

import torch

from softteacher.engine.pseudo_label_drought import PseudoLabelDrought


def drought(periods=3):
    return PseudoLabelDrought(periods, log_period=20, cls_thresh=0.9, rpn_thresh=0.9)


def test_it_warns_once_after_the_given_number_of_dry_periods_in_a_row():
    d = drought(3)
    scores = [torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]), torch.tensor([0.6, 0.7, 0.8, 0.85, 0.88])]  # per image
    assert d.update(19, {"semi/pseudo_boxes_cls": 0.0}, scores) is None
    assert d.update(39, {"semi/pseudo_boxes_cls": 0.0}, scores) is None
    assert d.update(59, {"semi/pseudo_boxes_cls": 0.5}, scores) is None  # a box: the count restarts
    assert d.update(79, {"semi/pseudo_boxes_cls": 0.0}, scores) is None
    assert d.update(99, {"semi/pseudo_boxes_cls": 0.0}, scores) is None
    message = d.update(119, {"semi/pseudo_boxes_cls": 0.0}, scores)
    # torch.quantile interpolates: median of the ten scores 0.55, 90 % 0.853, 99 % 0.877
    assert message.startswith("iteration 120: no pseudo-box reached the classification branch for 3 logging "
                              "periods (60 iterations)")
    assert "50 % 0.55, 90 % 0.85, 99 % 0.88, max 0.88" in message
    assert "SEMI.CLS_PSEUDO_THRESH 0.9" in message and "SEMI.BURN_IN_ITERS" in message
    assert d.update(139, {"semi/pseudo_boxes_cls": 0.0}, scores) is None  # once


def test_burn_in_periods_log_no_pseudo_boxes_and_do_not_count():
    d = drought(2)
    for it in range(19, 400, 20):  # burn-in: the step logs no pseudo-label statistics
        assert d.update(it, {"total_loss": 1.0}, None) is None
    assert d.update(419, {"semi/pseudo_boxes_cls": 0.0}, None) is None
    message = d.update(439, {"semi/pseudo_boxes_cls": 0.0}, [torch.zeros(0)])
    assert "The teacher detected nothing on the last batch" in message


def test_zero_periods_never_warns():
    d = drought(0)
    assert all(d.update(it, {"semi/pseudo_boxes_cls": 0.0}, None) is None for it in range(100))
