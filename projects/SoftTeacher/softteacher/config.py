"""Config keys of the Soft Teacher project.

Defaults are those of the original code for the COCO partial-label setting
(microsoft/SoftTeacher: configs/soft_teacher/base.py for thresholds, jitter, EMA and alpha;
ssod/models/soft_teacher.py for how they are used); projects/SoftTeacher/README.md lists each key
with its source.
"""

import contextlib
import difflib
import logging

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

logger = logging.getLogger(__name__)


# Config nodes renamed in release 0.2 (old -> new): the old name still works for one release,
# with a warning, when the config is read by ``load_config`` (as train_net.py and the tools do).
RENAMED_KEYS = {"SEMI.ADAPTIVE_REG_THRESH": "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH"}


def config_node(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def resolve_renamed_keys(cfg):
    """Move values set under a deprecated name (``RENAMED_KEYS``) to the new name, with a
    warning, and clear the old node."""
    for old, new in RENAMED_KEYS.items():
        old_node, new_node = config_node(cfg, old), config_node(cfg, new)
        for key, value in old_node.items():
            if value is None:
                continue
            logger.warning("%s.%s is deprecated: use %s.%s (the old name goes in the next release)",
                           old, key, new, key)
            new_node[key] = value
            old_node[key] = None


def add_softteacher_config(cfg):
    """Add the project's keys to a detectron2 config (call before ``merge_from_file``)."""
    cfg.SEMI = CN()
    # L = L_sup + UNSUP_WEIGHT * L_unsup (every unsupervised term, RPN included)
    cfg.SEMI.UNSUP_WEIGHT = 4.0
    # teacher detections with class score above this are pseudo-labels at all
    cfg.SEMI.PSEUDO_SCORE_THRESH = 0.5
    # ... and above these for the student's RPN and ROI-classification losses
    cfg.SEMI.RPN_PSEUDO_THRESH = 0.9
    cfg.SEMI.CLS_PSEUDO_THRESH = 0.9
    # box jitter: pseudo-boxes whose refined jitters vary less than this train ROI regression
    cfg.SEMI.REG_UNCERTAINTY_THRESH = 0.02
    cfg.SEMI.JITTER_TIMES = 10
    cfg.SEMI.JITTER_SCALE = 0.06
    # teacher <- m * teacher + (1 - m) * student, m = min(EMA_MOMENTUM, t / (t + 1))
    cfg.SEMI.EMA_MOMENTUM = 0.999
    # supervised-only iterations before the unsupervised loss starts (0 in the original)
    cfg.SEMI.BURN_IN_ITERS = 0
    # the teacher averages the student during the burn-in too (beyond the paper); False: it copies
    # the student until the burn-in ends and averages from there
    cfg.SEMI.EMA_DURING_BURN_IN = False
    # decay UNSUP_WEIGHT linearly to 0 over the last this many iterations (the paper; not in the
    # original code); 0: off
    cfg.SEMI.UNSUP_WEIGHT_DECAY_ITERS = 0
    # Opt-in, beyond the paper (the published fixed thresholds above stay the default):
    # per-class RPN and classification thresholds = the mean of the high component of a
    # two-Gaussian mixture of the class's last WINDOW teacher scores (Consistent-Teacher's policy),
    # clamped to RANGE; a class keeps CLS_PSEUDO_THRESH until it has MIN_SCORES scores
    cfg.SEMI.ADAPTIVE_SCORE_THRESH = CN()
    cfg.SEMI.ADAPTIVE_SCORE_THRESH.ENABLED = False
    cfg.SEMI.ADAPTIVE_SCORE_THRESH.WINDOW = 1000
    cfg.SEMI.ADAPTIVE_SCORE_THRESH.MIN_SCORES = 100
    cfg.SEMI.ADAPTIVE_SCORE_THRESH.RANGE = (0.5, 0.9)
    # per-class RPN and classification thresholds from the labeled class distribution (LabelMatch,
    # CVPR 2022): a class's threshold is its FRACTION x expected-th highest teacher score over the
    # last WINDOW_IMAGES unlabeled images, expected = images x labeled boxes per image x class share
    cfg.SEMI.LABEL_DISTRIBUTION_THRESH = CN()
    cfg.SEMI.LABEL_DISTRIBUTION_THRESH.ENABLED = False
    cfg.SEMI.LABEL_DISTRIBUTION_THRESH.FRACTION = 1.0
    cfg.SEMI.LABEL_DISTRIBUTION_THRESH.WINDOW_IMAGES = 200
    cfg.SEMI.LABEL_DISTRIBUTION_THRESH.RANGE = (0.5, 0.95)
    # box regression pseudo-boxes = those scoring above MIN_SCORE whose jitter uncertainty is under
    # the PASS_FRACTION quantile of the last WINDOW such boxes, instead of every pseudo-box under
    # REG_UNCERTAINTY_THRESH
    cfg.SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH = CN()
    cfg.SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.ENABLED = False
    cfg.SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.MIN_SCORE = 0.9
    cfg.SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.PASS_FRACTION = 0.5
    cfg.SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.WINDOW = 2000
    # deprecated spellings (see RENAMED_KEYS): None unless a config still sets them
    for old, new in RENAMED_KEYS.items():
        config_node(cfg, old.rsplit(".", 1)[0])[old.rsplit(".", 1)[1]] = CN(
            dict.fromkeys(config_node(cfg, new).keys(), None)
        )
    # box regression learns only from strong views that are not rotated or sheared: there a
    # pseudo-box maps to the loose hull of the turned box (a 15-degree turn of a square: IoU 0.67)
    cfg.SEMI.REG_SKIP_TURNED_VIEWS = False
    # teacher detections above IGNORE_MIN_SCORE that miss the RPN or classification threshold
    # are ignored regions there (neither object nor background) instead of background; needs
    # MODEL.PROPOSAL_GENERATOR.NAME "PseudoLabelRPN"
    cfg.SEMI.IGNORE_UNCERTAIN = False
    cfg.SEMI.IGNORE_MIN_SCORE = 0.5
    # the two ideas of the paper, each can be switched off for ablations
    cfg.SEMI.SOFT_BG_WEIGHT = True
    cfg.SEMI.BOX_JITTER = True
    # focal loss's gamma on the unlabeled ROI classification loss, with the soft weights (0: cross-
    # entropy, as published; Unbiased Teacher, Liu et al. 2021, uses 1.5 against pseudo-labels'
    # class imbalance)
    cfg.SEMI.UNSUP_CLS_FOCAL_GAMMA = 0.0
    # Opt-in, PseCo's (Li et al., ECCV 2022, section 3.2): the unlabeled ROI samples are labelled by
    # the teacher's predictions on them: a proposal is a candidate of the pseudo-box its teacher-
    # refined box overlaps most, by at least IOU_THRESH; each pseudo-box keeps its k best candidates
    # by sqrt(IoU * teacher score), k = the sum of its CANDIDATE_TOPK largest IoUs; the rest is
    # background
    cfg.SEMI.PREDICTION_GUIDED_ASSIGNMENT = CN()
    cfg.SEMI.PREDICTION_GUIDED_ASSIGNMENT.ENABLED = False
    cfg.SEMI.PREDICTION_GUIDED_ASSIGNMENT.IOU_THRESH = 0.4
    cfg.SEMI.PREDICTION_GUIDED_ASSIGNMENT.CANDIDATE_TOPK = 12
    # PseCo's positive-proposal consistency voting: each unlabeled foreground sample's box regression
    # is weighted by the mean IoU of the student's boxes of that pseudo-box's samples with it
    # (needs MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE "smooth_l1")
    cfg.SEMI.CONSISTENCY_VOTING = False
    # Opt-in, MixPL's (Chen et al., arXiv 2312.07006) mixed pseudo-labels: the last CACHE_SIZE
    # pseudo-labelled strong views are cached; each step the student also learns from a MOSAIC of
    # four of them (each shrunk by a factor drawn from MOSAIC_SCALE) and from a MIXUP of each strong
    # view with a cached one, each pass a loss of its own (weight 1 for background: the teacher
    # never saw these images) times its WEIGHT
    cfg.SEMI.PSEUDO_MIXING = CN()
    cfg.SEMI.PSEUDO_MIXING.MOSAIC = False
    cfg.SEMI.PSEUDO_MIXING.MIXUP = False
    cfg.SEMI.PSEUDO_MIXING.CACHE_SIZE = 8
    cfg.SEMI.PSEUDO_MIXING.MOSAIC_SCALE = (0.4, 0.6)
    cfg.SEMI.PSEUDO_MIXING.MOSAIC_WEIGHT = 0.5
    cfg.SEMI.PSEUDO_MIXING.MIXUP_WEIGHT = 0.5
    # MixPL's erasing of mixed views: (min, max) squares of side up to ERASE_MAX_SIZE x the short
    # side, filled with the pixel mean; pseudo-boxes covered more than ERASE_DROP are dropped
    cfg.SEMI.PSEUDO_MIXING.ERASE_PATCHES = (0, 0)
    cfg.SEMI.PSEUDO_MIXING.ERASE_MAX_SIZE = 0.2
    cfg.SEMI.PSEUDO_MIXING.ERASE_DROP = 0.7
    # which models EvalHook evaluates during training; the first is used by --eval-only
    cfg.SEMI.EVAL_MODELS = ("teacher", "student")
    # every this many iterations, the teacher's pseudo-labels on VIS_IMAGES unlabeled images are
    # drawn to tensorboard and OUTPUT_DIR/pseudo_labels/ (0: never)
    cfg.SEMI.VIS_PERIOD = 5000
    cfg.SEMI.VIS_IMAGES = 4
    # losses and pseudo-label statistics are computed for the log, read from the device and written
    # on one iteration in this many (and the last); detectron2's writers use 20
    cfg.SEMI.LOG_PERIOD = 20
    # after burn-in, warn once when this many logging periods in a row gave the classification
    # branch no pseudo-box (the unsupervised loss is then 0), with the teacher's scores (0: never)
    cfg.SEMI.DROUGHT_WARN_PERIODS = 10
    # one student backbone pass over the labeled images and the strong views (the original code
    # makes two): fewer launches; the losses differ from two passes only by the batch's padding.
    # Needs a backbone without batch statistics (frozen BN or GN, not BN / SyncBN)
    cfg.SEMI.ONE_PASS_STUDENT = False

    # colour op magnitudes, drawn from this inclusive range out of 10 (labeled and strong views)
    cfg.INPUT.COLOR_MAGNITUDE = (1, 9)
    # labeled images get one random colour op on top of resize + flip
    cfg.INPUT.LABELED_COLOR_AUG = True
    # the student's strong view: one geometric op (translate, rotate or shear x then y) and
    # random erasing, with uncovered or erased pixels set to FILL
    cfg.INPUT.STRONG = CN()
    cfg.INPUT.STRONG.GEOMETRIC_OPS = ("translate_x", "translate_y", "rotate", "shear")
    cfg.INPUT.STRONG.TRANSLATE = 0.1  # fraction of the image size
    cfg.INPUT.STRONG.ROTATE = 30.0  # degrees
    cfg.INPUT.STRONG.SHEAR = 30.0  # degrees
    cfg.INPUT.STRONG.ERASE_PATCHES = (1, 4)  # inclusive range of square patches
    cfg.INPUT.STRONG.ERASE_MAX_SIZE = 0.2  # largest side, as a fraction of the short side
    cfg.INPUT.STRONG.FILL = 125
    # (low, high): the strong view's short side drawn from this range, apart from the weak view's
    # INPUT.MIN_SIZE_TRAIN, so the student also learns at scales the teacher does not see
    # (multi-scale student view, after PseCo's and MixTeacher's scale variation); (): the same sizes
    cfg.INPUT.STRONG.MIN_SIZE_TRAIN = ()

    # score threshold of the detections that evaluation scores (teacher, student, supervised twin);
    # negative: MODEL.ROI_HEADS.SCORE_THRESH_TEST (0.05), which pseudo-labelling keeps using. The
    # original's README reports its best figures at 1e-3
    cfg.TEST.EVAL_SCORE_THRESH = -1.0

    cfg.DATASETS.TRAIN_LABELED = ()
    cfg.DATASETS.TRAIN_UNLABELED = ()
    # your own data by config alone: with NAME set, registers NAME_labeled (COCO json + images),
    # NAME_unlabeled (a COCO json, whose annotations then only measure pseudo-labels, or, with no
    # json, every image in the folder), NAME_val (COCO json + images: where choices are made) and
    # NAME_test (COCO json + images: held out, where the chosen model is reported)
    cfg.DATASETS.CUSTOM = CN()
    cfg.DATASETS.CUSTOM.NAME = ""
    cfg.DATASETS.CUSTOM.LABELED_JSON = ""
    cfg.DATASETS.CUSTOM.LABELED_IMAGES = ""
    cfg.DATASETS.CUSTOM.UNLABELED_JSON = ""
    cfg.DATASETS.CUSTOM.UNLABELED_IMAGES = ""
    cfg.DATASETS.CUSTOM.VAL_JSON = ""
    cfg.DATASETS.CUSTOM.VAL_IMAGES = ""
    cfg.DATASETS.CUSTOM.TEST_JSON = ""
    cfg.DATASETS.CUSTOM.TEST_IMAGES = ""
    # images per step over all GPUs, as detectron2's IMS_PER_BATCH (1:4 partial, 1:1 full COCO)
    cfg.SOLVER.IMS_PER_BATCH_LABELED = 8
    cfg.SOLVER.IMS_PER_BATCH_UNLABELED = 32


def all_keys(cfg, prefix=""):
    """Every dotted key of a config."""
    for key, value in cfg.items():
        if isinstance(value, CN):
            yield from all_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@contextlib.contextmanager
def suggest_known_keys(cfg, source):
    """Re-raise detectron2's "Non-existent config key" with where it came from and the nearest
    known keys."""
    try:
        yield
    except (KeyError, AssertionError) as e:  # a file's unknown key (fvcore), an override's (yacs)
        message = str(e.args[0]) if e.args else ""
        if not message.startswith(("Non-existent config key: ", "Non-existent key: ")):
            raise
        key = message.split(": ", 1)[1]
        near = difflib.get_close_matches(key, list(all_keys(cfg)), n=2, cutoff=0.8)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise KeyError(f"Non-existent config key: {key} (in {source}){hint}") from None


def load_config(config_file, opts=()):
    """detectron2's config with the project's keys, merged from a file and KEY VALUE overrides.
    MODEL.DEVICE "cuda" (detectron2's default) becomes "cpu" on a machine without CUDA."""
    cfg = get_cfg()
    add_softteacher_config(cfg)
    with suggest_known_keys(cfg, config_file):
        cfg.merge_from_file(config_file)
    with suggest_known_keys(cfg, "the command line"):
        cfg.merge_from_list(list(opts))
    resolve_renamed_keys(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg
