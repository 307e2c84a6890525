"""The Soft Teacher trainer: detectron2's ``DefaultTrainer`` with a teacher-student step.

One step: the teacher pseudo-labels the weak views -> the student (one forward, DDP-wrapped) runs
on the labeled batch and on the strong views -> L = L_sup + alpha * L_unsup -> backward -> optimizer
-> the EMA hook moves the teacher. The teacher is never wrapped and never gets gradients; it is
saved as "teacher" beside the student ("model") in every checkpoint.
"""

import logging
import os
import time

import torch
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, hooks
from detectron2.modeling import META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY, ROI_HEADS_REGISTRY, build_model
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch.nn.parallel import DistributedDataParallel

from ..data import LabeledDatasetMapper, SkippedImages, build_labeled_unlabeled_loader
from ..modeling import PseudoLabeler, PseudoLabelRPN, SemiSupervisedRCNN, SoftTeacherROIHeads
from .checkpoint import SafeCheckpointer
from .cpu_ddp import cpu_ddp_support
from .ema import EMATeacherHook
from .evaluation import build_detection_evaluator
from .pseudo_label_pictures import PseudoLabelPicturesHook
from .training_curves import TrainingCurvesHook

logger = logging.getLogger(__name__)


def unsup_weight_at(cfg, iteration):
    """alpha at an iteration: 0 during burn-in, UNSUP_WEIGHT after, optionally decayed linearly
    to 0 over the last UNSUP_WEIGHT_DECAY_ITERS iterations."""
    semi = cfg.SEMI
    if iteration < semi.BURN_IN_ITERS:
        return 0.0
    remaining = cfg.SOLVER.MAX_ITER - iteration
    if semi.UNSUP_WEIGHT_DECAY_ITERS > 0 and remaining < semi.UNSUP_WEIGHT_DECAY_ITERS:
        return semi.UNSUP_WEIGHT * remaining / semi.UNSUP_WEIGHT_DECAY_ITERS
    return semi.UNSUP_WEIGHT


def stop_on_non_finite_losses(loss_dict, iteration, output_dir):
    """Raise ``FloatingPointError`` naming the non-finite loss terms and the iteration, on every
    rank when any rank has one (called before the backward pass, so the weights, the teacher and
    the last checkpoint stay as they were)."""
    values = torch.stack([value.detach().float() for value in loss_dict.values()])
    non_finite = (~torch.isfinite(values)).float().sum()
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(non_finite)
    if non_finite.item() > 0:
        bad = {name: value.item() for name, value in zip(loss_dict, values) if not torch.isfinite(value)}
        terms = ", ".join(f"{name} = {value}" for name, value in bad.items()) or "on another rank"
        raise FloatingPointError(
            f"Non-finite loss at iteration {iteration}: {terms}. Stopped before the optimizer "
            f"step; --resume continues from the last checkpoint in {output_dir}"
        )


class SoftTeacherStep(SimpleTrainer):
    """The teacher-student training step, with optional mixed precision.

    AMP: float16 with a gradient scaler on CUDA, bfloat16 (no scaler needed) on the CPU.
    """

    def __init__(self, model, data_loader, optimizer, pseudo_labeler, cfg, amp=False):
        super().__init__(model, data_loader, optimizer)
        self.pseudo_labeler = pseudo_labeler
        self.cfg = cfg
        self.amp = amp
        device = next(model.parameters()).device
        self.amp_device = device.type
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
        self.skipped_images = SkippedImages()

    def run_step(self):
        assert self.model.training, "[SoftTeacherStep] model was changed to eval mode!"
        start = time.perf_counter()
        labeled, unlabeled = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        alpha = unsup_weight_at(self.cfg, self.iter)
        storage = get_event_storage()
        storage.put_scalar("semi/unsup_weight", alpha, smoothing_hint=False)
        skipped = self.skipped_images.update(unlabeled)
        storage.put_scalar("data/skipped_unlabeled_images", skipped, smoothing_hint=False)
        with torch.autocast(self.amp_device, dtype=self.amp_dtype, enabled=self.amp):
            if alpha > 0:
                inputs, stats = self.pseudo_labeler(unlabeled)
                storage.put_scalars(**stats)
                loss_dict = self.model(labeled, unlabeled=inputs)
            else:
                loss_dict = self.model(labeled)
            loss_dict = {
                name: value * alpha if name.startswith("unsup_") else value
                for name, value in loss_dict.items()
            }
            losses = sum(loss_dict.values())
        stop_on_non_finite_losses(loss_dict, self.iter, self.cfg.OUTPUT_DIR)

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


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

    def build_hooks(self):
        self.checkpointer = SafeCheckpointer.replacing(self.checkpointer)
        return super().build_hooks() + [TrainingCurvesHook(self.cfg.OUTPUT_DIR)]


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

