"""The training loader: every step, one labeled batch and one unlabeled batch in an exact ratio.

Two detectron2 train loaders, one per stream, each infinite, sharded over ranks by its
``TrainingSampler`` and aspect-ratio grouped, are zipped. Each yields exactly its per-GPU batch
size, so the ratio holds in every batch (the original code only met it on average).
"""

import logging

from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm

from .mappers import LabeledDatasetMapper, WeakStrongDatasetMapper

logger = logging.getLogger(__name__)


class LabeledUnlabeledLoader:
    """Iterates forever over (labeled batch, unlabeled batch) pairs."""

    def __init__(self, labeled_loader, unlabeled_loader):
        self.labeled_loader = labeled_loader
        self.unlabeled_loader = unlabeled_loader

    def __iter__(self):
        yield from zip(self.labeled_loader, self.unlabeled_loader)


def per_gpu_batch_sizes(cfg, world_size=None):
    """(labeled, unlabeled) images per GPU from the totals over all GPUs."""
    world_size = world_size or comm.get_world_size()
    sizes = []
    for key in ("IMS_PER_BATCH_LABELED", "IMS_PER_BATCH_UNLABELED"):
        total = cfg.SOLVER[key]
        if total <= 0 or total % world_size:
            raise ValueError(
                f"SOLVER.{key} = {total} must be a positive multiple of the number of "
                f"processes ({world_size})"
            )
        sizes.append(total // world_size)
    return tuple(sizes)


def labeled_sampler(cfg, dicts, seed):
    """The labeled stream's sampler: detectron2's ``DATALOADER.SAMPLER_TRAIN``, where
    "RepeatFactorTrainingSampler" repeats images of rare classes (``DATALOADER.REPEAT_THRESHOLD``),
    as MixPL resamples the labeled images of tail classes. The unlabeled stream has no classes to
    resample by: it always draws uniformly."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return TrainingSampler(len(dicts), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dicts, cfg.DATALOADER.REPEAT_THRESHOLD)
        return RepeatFactorTrainingSampler(factors, seed=seed)
    raise ValueError(f"DATALOADER.SAMPLER_TRAIN = {name!r}: expected TrainingSampler or RepeatFactorTrainingSampler "
                     "for the labeled images")


def build_labeled_unlabeled_loader(cfg):
    """The semi-supervised train loader of ``cfg`` (DATASETS.TRAIN_LABELED / TRAIN_UNLABELED)."""
    labeled_size, unlabeled_size = per_gpu_batch_sizes(cfg)
    logger.info("Per-GPU batch: %d labeled + %d unlabeled images", labeled_size, unlabeled_size)
    labeled = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN_LABELED, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    unlabeled = get_detection_dataset_dicts(cfg.DATASETS.TRAIN_UNLABELED, filter_empty=False)
    # one seed shared by all ranks (each then takes its own shard); None: agreed at random
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    loaders = []
    for index, (dicts, mapper, total, sampler) in enumerate(
        [
            (labeled, LabeledDatasetMapper(cfg, is_train=True), cfg.SOLVER.IMS_PER_BATCH_LABELED,
             labeled_sampler(cfg, labeled, seed)),
            (unlabeled, WeakStrongDatasetMapper(cfg, is_train=True), cfg.SOLVER.IMS_PER_BATCH_UNLABELED,
             TrainingSampler(len(unlabeled), seed=seed + 1)),
        ]
    ):
        loaders.append(
            build_detection_train_loader(
                dicts,
                mapper=mapper,
                sampler=sampler,
                total_batch_size=total,
                aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
                seed=seed + index + comm.get_rank() * 1000,
            )
        )
    return LabeledUnlabeledLoader(*loaders)
