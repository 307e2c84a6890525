"""The teacher-student training step.

One step: the teacher pseudo-labels the weak views -> the student (one forward, DDP-wrapped) runs
on the labeled batch and on the strong views -> L = L_sup + alpha * L_unsup -> backward -> optimizer.
The EMA hook then moves the teacher (:mod:`.ema`).
"""

import time

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..data import SkippedImages
from .pseudo_label_drought import PseudoLabelDrought


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


class DeviceScalars:
    """Statistics kept on the device as (sum, weight) pairs and read back in one transfer:
    ``read()`` gives {name: sum / weight} of the names with weight, summed over what was added."""

    def __init__(self):
        self.pairs = {}

    def add(self, stats):
        for name, (value, weight) in stats.items():
            total, total_weight = self.pairs.get(name, (0, 0))
            self.pairs[name] = (total + value, total_weight + weight)

    def read(self):
        if not self.pairs:
            return {}
        names, pairs = list(self.pairs), list(self.pairs.values())
        device = next((v.device for pair in pairs for v in pair if isinstance(v, torch.Tensor)), "cpu")
        flat = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for pair in pairs for v in pair])
        values = flat.tolist()  # the one host synchronisation of the period
        self.pairs = {}
        return {name: values[2 * i] / values[2 * i + 1] for i, name in enumerate(names) if values[2 * i + 1] > 0}


class SoftTeacherStep(SimpleTrainer):
    """The teacher-student training step, with optional mixed precision.

    AMP: float16 with a gradient scaler on CUDA, bfloat16 (no scaler needed) on the CPU. Losses and
    pseudo-label statistics are computed for the log and read from the device on one step in
    ``SEMI.LOG_PERIOD`` (and the last), as detectron2's ``gather_metric_period`` does for losses.
    """

    def __init__(self, model, data_loader, optimizer, pseudo_labeler, cfg, amp=False):
        super().__init__(model, data_loader, optimizer, gather_metric_period=cfg.SEMI.LOG_PERIOD)
        self.pseudo_labeler = pseudo_labeler
        self.cfg = cfg
        self.amp = amp
        device = next(model.parameters()).device
        self.amp_device = device.type
        self.amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
        self.skipped_images = SkippedImages()
        self.statistics = DeviceScalars()
        self.drought = PseudoLabelDrought.from_config(cfg)

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
            if alpha > 0:  # pseudo-label statistics only on logging steps, as detectron2 its losses
                inputs, stats = self.pseudo_labeler(unlabeled, statistics=self._logging_step())
                loss_dict = self.model(labeled, unlabeled=inputs)
                self.statistics.add({**stats, **(inputs["statistics"] or {})})
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
        if self._logging_step():  # the losses and statistics are read from the device here only
            self.write_metrics(loss_dict, data_time, self.iter)
            logged = self.statistics.read()
            storage.put_scalars(**logged, smoothing_hint=False)
            self.drought.update(self.iter, logged, self.pseudo_labeler.last_teacher_scores)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _logging_step(self):
        return (self.iter + 1) % self.gather_metric_period == 0 or self.iter + 1 == self.cfg.SOLVER.MAX_ITER

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
