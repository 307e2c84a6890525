"""float16 AMP with the gradient scaler, on CUDA only (skipped without a GPU)."""

import math

import pytest
import torch

from softteacher import SoftTeacherTrainer
from softteacher.modeling import pseudo_labels

from conftest import EVERY_DETECTION_IS_A_PSEUDO_BOX, soft_teacher_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_two_fp16_steps_keep_the_soft_loss_and_box_jitter_in_float32_and_save_the_scaler(
    tiny_semi, tmp_path, monkeypatch
):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=2, **EVERY_DETECTION_IS_A_PSEUDO_BOX, **{
        "MODEL.DEVICE": "cuda", "SOLVER.AMP.ENABLED": "True", "TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()",
    })
    trainer = SoftTeacherTrainer(cfg)
    seen = {"box_head": set()}
    trainer.student.roi_heads.box_head.register_forward_hook(lambda m, i, o: seen["box_head"].add(o.dtype))

    predictor = trainer.student.roi_heads.box_predictor
    weighted_cls_loss = predictor.weighted_cls_loss

    def spy_cls_loss(scores, gt_classes, weights):
        loss = weighted_cls_loss(scores, gt_classes, weights)
        seen.update(cls_scores=scores.dtype, cls_weights=weights.dtype, cls_loss=loss.dtype)
        return loss

    monkeypatch.setattr(predictor, "weighted_cls_loss", spy_cls_loss)
    jitter_uncertainty = pseudo_labels.jitter_uncertainty

    def spy_jitter(refine, boxes, classes, times, scale):
        def spy_refine(b, c):
            refined = refine(b, c)
            seen["refined"] = {r.dtype for r in refined}
            return refined

        uncertainty = jitter_uncertainty(spy_refine, boxes, classes, times, scale)
        seen["uncertainty"] = {u.dtype for u in uncertainty}
        return uncertainty

    monkeypatch.setattr(pseudo_labels, "jitter_uncertainty", spy_jitter)
    trainer.train()

    assert torch.float16 in seen["box_head"]  # autocast really ran the heads in half precision
    assert seen["cls_weights"] == seen["cls_loss"] == torch.float32
    assert seen["refined"] == seen["uncertainty"] == {torch.float32}
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(math.isfinite(v) for v, _ in losses)
    unsup = trainer.storage.history("unsup_loss_cls").values()
    assert unsup and all(math.isfinite(v) and v > 0 for v, _ in unsup)

    scaler = trainer._trainer.grad_scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert saved["trainer"]["_trainer"]["grad_scaler"] == scaler.state_dict()
    assert saved["trainer"]["_trainer"]["grad_scaler"]["scale"] == scaler.get_scale()
