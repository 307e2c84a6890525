"""The score-band table of bench/score_bands.py against hand-counted detections."""


import pytest
import torch

from softteacher.modeling.pseudo_label_stats import match_scores, score_band_table


def test_match_takes_each_objects_best_overlapping_score():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    dets = torch.tensor([[0.0, 0, 10, 10],     # object 0 exactly
                         [1.0, 0, 10, 10],     # object 0, IoU 0.9
                         [20, 20, 30, 26],     # object 1, IoU 0.6
                         [80, 80, 90, 90],     # nothing
                         [50, 50, 60, 54]])    # object 2, IoU 0.4: no match
    scores = torch.tensor([0.4, 0.95, 0.25, 0.8, 0.99])
    best, is_true = match_scores(gt, dets, scores)
    assert best.tolist() == pytest.approx([0.95, 0.25, 0.0])
    assert is_true.tolist() == [True, True, True, False, False]


def test_match_without_detections_or_objects():
    best, is_true = match_scores(torch.zeros(2, 4), torch.zeros(0, 4), torch.zeros(0))
    assert best.tolist() == [0.0, 0.0] and is_true.numel() == 0
    best, is_true = match_scores(torch.zeros(0, 4), torch.ones(1, 4), torch.ones(1))
    assert best.numel() == 0 and is_true.tolist() == [False]


def test_band_table_counts_by_hand():
    objects = torch.tensor([0.95, 0.6, 0.35, 0.0])
    scores = torch.tensor([0.95, 0.92, 0.6, 0.35, 0.31, 0.06])
    true = torch.tensor([True, False, True, True, False, False])
    rows = score_band_table(objects, scores, true, num_images=2, edges=(0.9, 0.5, 0.3, 0.05))
    assert [r["band"] for r in rows] == [[0.9, None], [0.5, 0.9], [0.3, 0.5], [0.05, 0.3], [0, 0.05]]
    assert [r["objects"] for r in rows] == [0.25, 0.25, 0.25, 0.0, 0.25]
    assert [r["detections_per_image"] for r in rows[:4]] == [1.0, 0.5, 1.0, 0.5]
    assert [r["precision"] for r in rows[:4]] == [0.5, 1.0, 0.5, 0.0]
