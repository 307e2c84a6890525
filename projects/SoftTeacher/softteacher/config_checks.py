"""Checks that stop a run at start, naming the config key and its value: values a run cannot train
with, and initial weights that cannot be loaded."""

import os

from .config import RENAMED_KEYS, config_node

BATCH_STATISTICS_NORMS = ("BN", "SyncBN", "NaiveSyncBN", "nnSyncBN")


def _check(ok, key, value, expected):
    if not ok:
        raise ValueError(f"{key} = {value!r}: expected {expected}")


def validate_softteacher_config(cfg):
    """Stop at start, naming the key and the value, on a config that cannot train sensibly:
    thresholds outside [0, 1], batch parts that are not positive, a negative alpha, an EMA momentum
    outside (0, 1), fewer than 2 jitters, an unregistered ROI head, or an unregistered dataset."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import ROI_HEADS_REGISTRY

    semi = cfg.SEMI
    for old, new in RENAMED_KEYS.items():
        still_set = [key for key, value in config_node(cfg, old).items() if value is not None]
        _check(not still_set, f"{old}.{still_set[0] if still_set else ''}", None,
               f"the new name {new} (read the config with softteacher.load_config to accept the old one)")
    for key in ("PSEUDO_SCORE_THRESH", "RPN_PSEUDO_THRESH", "CLS_PSEUDO_THRESH", "IGNORE_MIN_SCORE"):
        _check(0.0 <= semi[key] <= 1.0, f"SEMI.{key}", semi[key], "a score threshold in [0, 1]")
    _check(semi.REG_UNCERTAINTY_THRESH >= 0, "SEMI.REG_UNCERTAINTY_THRESH", semi.REG_UNCERTAINTY_THRESH,
           "a non-negative jitter uncertainty")
    adaptive_score, adaptive_reg = semi.ADAPTIVE_SCORE_THRESH, semi.ADAPTIVE_REG_UNCERTAINTY_THRESH
    low_high = tuple(adaptive_score.RANGE)
    _check(len(low_high) == 2 and 0.0 <= low_high[0] <= low_high[1] <= 1.0, "SEMI.ADAPTIVE_SCORE_THRESH.RANGE",
           adaptive_score.RANGE, "(low, high) with 0 <= low <= high <= 1")
    _check(0.0 <= adaptive_reg.MIN_SCORE <= 1.0, "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.MIN_SCORE",
           adaptive_reg.MIN_SCORE, "a score threshold in [0, 1]")
    _check(0.0 < adaptive_reg.PASS_FRACTION <= 1.0, "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.PASS_FRACTION",
           adaptive_reg.PASS_FRACTION, "a fraction in (0, 1]")
    for key, value in (("ADAPTIVE_SCORE_THRESH.WINDOW", adaptive_score.WINDOW),
                       ("ADAPTIVE_SCORE_THRESH.MIN_SCORES", adaptive_score.MIN_SCORES),
                       ("ADAPTIVE_REG_UNCERTAINTY_THRESH.WINDOW", adaptive_reg.WINDOW)):
        _check(value >= 1, f"SEMI.{key}", value, "a positive number of scores")
    _check(adaptive_score.MIN_SCORES <= adaptive_score.WINDOW, "SEMI.ADAPTIVE_SCORE_THRESH.MIN_SCORES",
           adaptive_score.MIN_SCORES, f"at most WINDOW ({adaptive_score.WINDOW})")
    label_dist = semi.LABEL_DISTRIBUTION_THRESH
    _check(not (label_dist.ENABLED and adaptive_score.ENABLED), "SEMI.LABEL_DISTRIBUTION_THRESH.ENABLED",
           label_dist.ENABLED, "False with SEMI.ADAPTIVE_SCORE_THRESH.ENABLED (one per-class threshold rule)")
    _check(label_dist.FRACTION > 0, "SEMI.LABEL_DISTRIBUTION_THRESH.FRACTION", label_dist.FRACTION,
           "a positive fraction of the expected objects")
    _check(label_dist.WINDOW_IMAGES >= 1, "SEMI.LABEL_DISTRIBUTION_THRESH.WINDOW_IMAGES", label_dist.WINDOW_IMAGES,
           "a positive number of images")
    ld_range = tuple(label_dist.RANGE)
    _check(len(ld_range) == 2 and 0.0 <= ld_range[0] <= ld_range[1] <= 1.0, "SEMI.LABEL_DISTRIBUTION_THRESH.RANGE",
           label_dist.RANGE, "(low, high) with 0 <= low <= high <= 1")
    _check(semi.UNSUP_WEIGHT >= 0, "SEMI.UNSUP_WEIGHT", semi.UNSUP_WEIGHT, "a non-negative alpha")
    _check(semi.UNSUP_CLS_FOCAL_GAMMA >= 0, "SEMI.UNSUP_CLS_FOCAL_GAMMA", semi.UNSUP_CLS_FOCAL_GAMMA,
           "a non-negative focusing gamma")
    pla = semi.PREDICTION_GUIDED_ASSIGNMENT
    _check(0.0 < pla.IOU_THRESH <= 1.0, "SEMI.PREDICTION_GUIDED_ASSIGNMENT.IOU_THRESH", pla.IOU_THRESH,
           "an IoU in (0, 1]")
    _check(pla.CANDIDATE_TOPK >= 1, "SEMI.PREDICTION_GUIDED_ASSIGNMENT.CANDIDATE_TOPK", pla.CANDIDATE_TOPK,
           "a positive number of candidates")
    mixing = semi.PSEUDO_MIXING
    _check(mixing.CACHE_SIZE >= (4 if mixing.MOSAIC else 1), "SEMI.PSEUDO_MIXING.CACHE_SIZE", mixing.CACHE_SIZE,
           "at least 4 cached views with MOSAIC (a mosaic has four), at least 1 otherwise")
    scale = tuple(mixing.MOSAIC_SCALE)
    _check(len(scale) == 2 and 0.0 < scale[0] <= scale[1], "SEMI.PSEUDO_MIXING.MOSAIC_SCALE", mixing.MOSAIC_SCALE,
           "(low, high) with 0 < low <= high")
    erase = tuple(mixing.ERASE_PATCHES)
    _check(len(erase) == 2 and 0 <= erase[0] <= erase[1], "SEMI.PSEUDO_MIXING.ERASE_PATCHES", mixing.ERASE_PATCHES,
           "(min, max) patches with 0 <= min <= max ((0, 0): no erasing)")
    _check(0.0 < mixing.ERASE_MAX_SIZE <= 1.0, "SEMI.PSEUDO_MIXING.ERASE_MAX_SIZE", mixing.ERASE_MAX_SIZE,
           "a fraction of the short side in (0, 1]")
    _check(0.0 <= mixing.ERASE_DROP <= 1.0, "SEMI.PSEUDO_MIXING.ERASE_DROP", mixing.ERASE_DROP,
           "a covered fraction in [0, 1]")
    for key in ("MOSAIC_WEIGHT", "MIXUP_WEIGHT"):
        _check(mixing[key] >= 0, f"SEMI.PSEUDO_MIXING.{key}", mixing[key], "a non-negative loss weight")
    if semi.CONSISTENCY_VOTING:
        loss_type = cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE
        _check(loss_type == "smooth_l1", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", loss_type,
               '"smooth_l1" with SEMI.CONSISTENCY_VOTING (its weights apply to smooth L1 regression)')
    _check(0.0 < semi.EMA_MOMENTUM < 1.0, "SEMI.EMA_MOMENTUM", semi.EMA_MOMENTUM, "a momentum in (0, 1)")
    _check(semi.JITTER_TIMES >= 2, "SEMI.JITTER_TIMES", semi.JITTER_TIMES, "at least 2 jittered copies (a std)")
    _check(semi.JITTER_SCALE > 0, "SEMI.JITTER_SCALE", semi.JITTER_SCALE, "a positive fraction of the box size")
    _check(cfg.TEST.EVAL_SCORE_THRESH < 1.0, "TEST.EVAL_SCORE_THRESH", cfg.TEST.EVAL_SCORE_THRESH,
           "a score threshold under 1 (negative: MODEL.ROI_HEADS.SCORE_THRESH_TEST)")
    _check(semi.LOG_PERIOD >= 1, "SEMI.LOG_PERIOD", semi.LOG_PERIOD, "a positive number of iterations")
    _check(semi.DROUGHT_WARN_PERIODS >= 0, "SEMI.DROUGHT_WARN_PERIODS", semi.DROUGHT_WARN_PERIODS,
           "a non-negative number of logging periods (0: no warning)")
    for key in ("BURN_IN_ITERS", "UNSUP_WEIGHT_DECAY_ITERS", "VIS_PERIOD"):
        _check(semi[key] >= 0, f"SEMI.{key}", semi[key], "a non-negative number of iterations")
    if cfg.DATASETS.TRAIN_UNLABELED:
        for key in ("IMS_PER_BATCH_LABELED", "IMS_PER_BATCH_UNLABELED"):
            _check(cfg.SOLVER[key] > 0, f"SOLVER.{key}", cfg.SOLVER[key], "a positive number of images per step")
    strong_sizes = tuple(cfg.INPUT.STRONG.MIN_SIZE_TRAIN)
    _check(not strong_sizes or (len(strong_sizes) == 2 and 0 < strong_sizes[0] <= strong_sizes[1]),
           "INPUT.STRONG.MIN_SIZE_TRAIN", cfg.INPUT.STRONG.MIN_SIZE_TRAIN, "() or a range (low, high) of short sides")
    if semi.ONE_PASS_STUDENT:
        for key in ("RESNETS", "FPN"):
            norm = cfg.MODEL[key].NORM
            _check(norm not in BATCH_STATISTICS_NORMS, f"MODEL.{key}.NORM", norm,
                   "a norm without batch statistics (FrozenBN, GN) with SEMI.ONE_PASS_STUDENT: batch statistics "
                   "over both groups would differ from two passes")
    name = cfg.MODEL.ROI_HEADS.NAME
    _check(name in ROI_HEADS_REGISTRY, "MODEL.ROI_HEADS.NAME", name,
           f"a registered ROI head ({', '.join(sorted(n for n, _ in ROI_HEADS_REGISTRY))})")
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TRAIN_LABELED", "TRAIN_UNLABELED", "TEST"):
        for dataset in cfg.DATASETS[key]:
            _check(dataset in registered, f"DATASETS.{key}", dataset,
                   "a registered dataset name (see README: COCO splits, your own data)")


IMAGENET_R50_URL = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"


def check_initial_weights(cfg, resume=False):
    """Stop at start when MODEL.WEIGHTS will be loaded but cannot be: a missing local file, or a
    URL that cannot be fetched (no internet), naming the path and how to get the file. Not
    checked when ``resume`` finds a checkpoint in OUTPUT_DIR (MODEL.WEIGHTS is then not read)."""
    from detectron2.utils.file_io import PathManager

    path = cfg.MODEL.WEIGHTS
    if not path or (resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
        return
    how = (f"the ImageNet weights the COCO and VOC configs start from are detectron2's model-zoo file "
           f"{IMAGENET_R50_URL}: download it on a machine with internet and pass MODEL.WEIGHTS /path/to/R-50.pkl")
    if "://" not in path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MODEL.WEIGHTS = {path!r} does not exist. For a trained model, give its "
                                    f".pth file; {how}")
        return
    try:
        PathManager.get_local_path(path)  # fetched once, then read from detectron2's cache
    except Exception as e:  # iopath raises whatever urllib raises offline
        raise FileNotFoundError(f"MODEL.WEIGHTS = {path!r} could not be fetched ({type(e).__name__}: {e}); "
                                f"{how}") from e
