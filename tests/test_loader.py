"""The labeled + unlabeled loader: exact ratio, determinism, rank shards, no leaked ground truth."""

import itertools

import pytest
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from softteacher.data import build_labeled_unlabeled_loader
from softteacher.data.loader import per_gpu_batch_sizes

from conftest import semi_cfg


def take(cfg, steps):
    seed_all_rng(cfg.SEED)  # what default_setup does for a run with SEED set
    return list(itertools.islice(iter(build_labeled_unlabeled_loader(cfg)), steps))


def signature(batches):
    return [
        (
            [(d["file_name"], d["image"].shape, int(d["image"].sum())) for d in labeled],
            [(d["file_name"], d["strong"]["image"].shape, int(d["strong"]["image"].sum()))
             for d in unlabeled],
        )
        for labeled, unlabeled in batches
    ]


def test_every_batch_has_the_exact_ratio_and_one_orientation(tiny_semi):
    cfg = semi_cfg(*tiny_semi, **{"SOLVER.IMS_PER_BATCH_LABELED": 2,
                                  "SOLVER.IMS_PER_BATCH_UNLABELED": 6})
    for labeled, unlabeled in take(cfg, 6):
        assert (len(labeled), len(unlabeled)) == (2, 6)
        for batch in (labeled, unlabeled):
            assert len({d["width"] > d["height"] for d in batch}) == 1  # aspect-ratio grouped


def test_the_student_never_sees_unlabeled_ground_truth(tiny_semi):
    for _, unlabeled in take(semi_cfg(*tiny_semi), 3):
        for d in unlabeled:
            assert "instances" not in d and "instances" not in d["strong"]
            assert "instances" not in d["weak"]
            assert len(d["unlabeled_gt_instances"]) > 0  # kept apart, for quality measurement
            assert d["weak_to_strong"].shape == (3, 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_gives_the_same_batches_and_another_seed_others(tiny_semi, workers):
    cfg = semi_cfg(*tiny_semi, **{"DATALOADER.NUM_WORKERS": workers})
    first = signature(take(cfg, 4))
    assert signature(take(cfg, 4)) == first
    assert signature(take(semi_cfg(*tiny_semi, SEED=6, **{"DATALOADER.NUM_WORKERS": workers}), 4)) != first


def test_ranks_read_disjoint_shards_that_cover_an_epoch(tiny_semi, monkeypatch):
    import detectron2.data.build as build

    unlabeled_images = {d["file_name"] for d in DatasetCatalog.get(tiny_semi[1])}
    per_rank = []
    for rank in range(3):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: 3)
        monkeypatch.setattr(build, "get_world_size", lambda: 3)
        cfg = semi_cfg(*tiny_semi, **{"SOLVER.IMS_PER_BATCH_LABELED": 3,
                                      "SOLVER.IMS_PER_BATCH_UNLABELED": 3,
                                      "DATALOADER.ASPECT_RATIO_GROUPING": False})
        # one epoch of the unlabeled stream is len/3 images per rank, one image per step
        steps = len(unlabeled_images) // 3
        per_rank.append([d["file_name"] for _, u in take(cfg, steps) for d in u])
    seen = [name for names in per_rank for name in names]
    assert len(seen) == len(set(seen)) == len(unlabeled_images)
    assert set(seen) == unlabeled_images


@pytest.mark.parametrize("labeled,unlabeled,world", [(8, 30, 4), (0, 4, 1), (2, 4, 3)])
def test_batch_totals_must_split_evenly_over_processes(tiny_semi, labeled, unlabeled, world):
    cfg = semi_cfg(*tiny_semi, **{"SOLVER.IMS_PER_BATCH_LABELED": labeled,
                                  "SOLVER.IMS_PER_BATCH_UNLABELED": unlabeled})
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH_"):
        per_gpu_batch_sizes(cfg, world)


def test_per_gpu_sizes_divide_the_totals(tiny_semi):
    assert per_gpu_batch_sizes(semi_cfg(*tiny_semi, **{"SOLVER.IMS_PER_BATCH_LABELED": 8,
                                                       "SOLVER.IMS_PER_BATCH_UNLABELED": 32}), 8) == (1, 4)


def test_the_labeled_stream_repeats_rare_class_images_with_detectron2s_repeat_factor_sampler():
    from detectron2.config import get_cfg

    from softteacher.data.loader import labeled_sampler

    cfg = get_cfg()
    cfg.DATALOADER.SAMPLER_TRAIN, cfg.DATALOADER.REPEAT_THRESHOLD = "RepeatFactorTrainingSampler", 0.5
    # class 1 on one image of ten (frequency 0.1): repeat factor sqrt(0.5 / 0.1) = 2.236; class 0: 1
    dicts = [{"annotations": [{"category_id": 1 if i == 0 else 0}]} for i in range(10)]
    draws = list(itertools.islice(iter(labeled_sampler(cfg, dicts, seed=0)), 40000))
    assert draws.count(0) / len(draws) == pytest.approx(2.236 / (9 + 2.236), abs=0.01)
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    draws = list(itertools.islice(iter(labeled_sampler(cfg, dicts, seed=0)), 10000))
    assert draws.count(0) / len(draws) == pytest.approx(0.1, abs=0.01)
    cfg.DATALOADER.SAMPLER_TRAIN = "RandomSubsetTrainingSampler"
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN = 'RandomSubsetTrainingSampler'"):
        labeled_sampler(cfg, dicts, seed=0)
