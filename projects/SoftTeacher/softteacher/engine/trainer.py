"""The trainers: the supervised twin and Soft Teacher, both detectron2 ``DefaultTrainer``s.

Soft Teacher's step is :class:`.step.SoftTeacherStep`. The teacher is never wrapped and never gets
gradients; it is saved as "teacher" beside the student ("model") in every checkpoint.
"""

import contextlib
import logging
import os

from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.modeling import META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY, ROI_HEADS_REGISTRY, build_model
from torch.nn.parallel import DistributedDataParallel

from ..data import LabeledDatasetMapper, build_labeled_unlabeled_loader
from ..modeling import PseudoLabeler, PseudoLabelRPN, SemiSupervisedRCNN, SoftTeacherROIHeads
from .checkpoint import SafeCheckpointer
from .cpu_ddp import cpu_ddp_support
from .ema import EMATeacherHook
from .evaluation import build_detection_evaluator
from .pseudo_label_pictures import PseudoLabelPicturesHook
from .step import SoftTeacherStep
from .training_curves import TrainingCurvesHook

logger = logging.getLogger(__name__)


class _LoadInto:
    """A checkpointable that loads a saved state into ``module`` and remembers that it did."""

    def __init__(self, module):
        self.module = module
        self.loaded = False

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict):
        self.module.load_state_dict(state_dict)
        self.loaded = True


def check_semi_supervised_model(cfg):
    if not issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), SemiSupervisedRCNN):
        raise ValueError(
            f"MODEL.META_ARCHITECTURE = {cfg.MODEL.META_ARCHITECTURE!r}: semi-supervised training "
            "needs SemiSupervisedRCNN or a subclass"
        )
    if not issubclass(ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME), SoftTeacherROIHeads):
        raise ValueError(
            f"MODEL.ROI_HEADS.NAME = {cfg.MODEL.ROI_HEADS.NAME!r}: semi-supervised training "
            "needs SoftTeacherROIHeads or a subclass"
        )
    if cfg.SEMI.IGNORE_UNCERTAIN and not issubclass(
        PROPOSAL_GENERATOR_REGISTRY.get(cfg.MODEL.PROPOSAL_GENERATOR.NAME), PseudoLabelRPN
    ):
        raise ValueError(
            f"MODEL.PROPOSAL_GENERATOR.NAME = {cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}: SEMI.IGNORE_UNCERTAIN "
            "needs PseudoLabelRPN or a subclass"
        )


@contextlib.contextmanager
def evaluation_score_thresh(model, thresh):
    """The model's box predictor keeps detections down to ``thresh`` inside the block (a negative
    ``thresh`` leaves the configured test-time threshold)."""
    predictor = getattr(model, "module", model).roi_heads.box_predictor
    saved = predictor.test_score_thresh
    if thresh >= 0:
        predictor.test_score_thresh = thresh
    try:
        yield
    finally:
        predictor.test_score_thresh = saved


class SupervisedTrainer(DefaultTrainer):
    """``DefaultTrainer`` for the supervised twins (configs without DATASETS.TRAIN_UNLABELED):
    labeled images augmented as Soft Teacher's labeled stream (INPUT.LABELED_COLOR_AUG), so the
    two compare like for like; checkpoints that never leave a half-written file; COCO evaluation
    with the configured test score threshold; training_curves.png; DDP on CPU-only machines."""

    def __init__(self, cfg):
        with cpu_ddp_support(cfg):
            super().__init__(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=LabeledDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_detection_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation, scoring detections down to ``TEST.EVAL_SCORE_THRESH``."""
        with evaluation_score_thresh(model, cfg.TEST.EVAL_SCORE_THRESH):
            return super().test(cfg, model, evaluators)

    def build_hooks(self):
        self.checkpointer = SafeCheckpointer.replacing(self.checkpointer)
        ret = super().build_hooks()
        for hook in ret:
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.SEMI.LOG_PERIOD
        return ret + [TrainingCurvesHook(self.cfg.OUTPUT_DIR)]


class SoftTeacherTrainer(SupervisedTrainer):
    """The supervised trainer's hooks, checkpoints and evaluation, plus a teacher that
    pseudo-labels, follows the student by EMA and is evaluated beside it."""

    def __init__(self, cfg):
        check_semi_supervised_model(cfg)
        # built before DefaultTrainer.__init__, whose build_hooks() needs it
        self.teacher = self.build_teacher(cfg)
        self.pseudo_labeler = PseudoLabeler(cfg, self.teacher)
        super().__init__(cfg)
        base = self._trainer
        self._trainer = SoftTeacherStep(
            base.model, base.data_loader, base.optimizer,
            self.pseudo_labeler, cfg, amp=cfg.SOLVER.AMP.ENABLED,
        )
        self.checkpointer.add_checkpointable("teacher", self.teacher)
        if self.pseudo_labeler.state_dict():  # adaptive thresholds: their windows resume too
            self.checkpointer.add_checkpointable("pseudo_labeler", self.pseudo_labeler)

    @classmethod
    def build_teacher(cls, cfg):
        teacher = build_model(cfg)
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        return teacher

    @classmethod
    def build_train_loader(cls, cfg):
        return build_labeled_unlabeled_loader(cfg)

    @property
    def student(self):
        model = self.model
        return model.module if isinstance(model, DistributedDataParallel) else model

    def build_hooks(self):
        ret = super().build_hooks()
        semi = self.cfg.SEMI
        ema = EMATeacherHook(
            self.teacher, self.student, semi.EMA_MOMENTUM, 0 if semi.EMA_DURING_BURN_IN else semi.BURN_IN_ITERS
        )
        # right after the LR scheduler: checkpoints and evaluation then see the updated teacher
        position = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler)) + 1
        ret.insert(position, ema)
        for i, hook in enumerate(ret):
            if isinstance(hook, hooks.EvalHook):
                ret[i] = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._evaluate_teacher_and_student)
        if self.cfg.SEMI.VIS_PERIOD > 0:
            ret.append(PseudoLabelPicturesHook(
                self.cfg, self.pseudo_labeler, self.cfg.SEMI.VIS_PERIOD, self.cfg.SEMI.VIS_IMAGES
            ))
        return ret

    def _evaluate_teacher_and_student(self):
        models = {"teacher": self.teacher, "student": self.student}
        results = {}
        for name in self.cfg.SEMI.EVAL_MODELS:
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.OUTPUT_DIR = os.path.join(self.cfg.OUTPUT_DIR, name)
            logger.info("Evaluating the %s", name)
            results[name] = self.test(cfg, models[name])
        self._last_eval_results = results
        return results

    @classmethod
    def load_for_evaluation(cls, cfg, model, resume=False, which=None):
        """Load the weights of MODEL.WEIGHTS that ``--eval-only`` evaluates (or the tools run) into
        ``model``: the checkpoint's teacher when ``which`` (default SEMI.EVAL_MODELS[0]) is
        "teacher" and it has one, else its model (the student, or a plain detectron2 checkpoint)."""
        which = which or cfg.SEMI.EVAL_MODELS[0]
        extra = {"teacher": _LoadInto(model)} if which == "teacher" else {}
        checkpointer = SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR, **extra)
        path = cfg.MODEL.WEIGHTS
        if resume and checkpointer.has_checkpoint():
            path = checkpointer.get_checkpoint_file()
        checkpointer.load(path)
        source = "teacher" if extra and extra["teacher"].loaded else "model"
        logger.info("Evaluating the %s weights of %s", source, path)
        return source

