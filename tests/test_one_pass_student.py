"""SEMI.ONE_PASS_STUDENT: one backbone pass over labeled images and strong views gives the losses and
gradients of two passes where both groups pad to the same size."""

import copy
import random

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from softteacher import SoftTeacherTrainer
from softteacher.config_checks import validate_softteacher_config
from softteacher.data import build_labeled_unlabeled_loader
from softteacher.modeling import PseudoLabeler

from conftest import EVERY_DETECTION_IS_A_PSEUDO_BOX, soft_teacher_cfg


def crop_all(images, height, width):
    for item in images:
        item["image"] = item["image"][:, :height, :width].contiguous()


def losses_and_gradients(student, labeled, inputs):
    student.zero_grad()
    torch.manual_seed(11)  # the same proposal sampling in both
    with EventStorage(0):
        losses = student(labeled, unlabeled=inputs)
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in student.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def test_one_pass_gives_the_losses_and_gradients_of_two_passes(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX)
    torch.manual_seed(0)
    np.random.seed(0)  # the augmentations' draws: the same batch in every run
    random.seed(0)
    two_pass = build_model(cfg)
    one_pass = copy.deepcopy(two_pass)
    one_pass.one_pass_student = True
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    teacher.load_state_dict(two_pass.state_dict())
    labeled, unlabeled = next(iter(build_labeled_unlabeled_loader(cfg)))
    inputs, _ = PseudoLabeler(cfg, teacher)(unlabeled)
    assert sum(len(t) for t in inputs["cls_targets"]) > 0
    # one size for every image, so both groups pad alike
    height = min(x["image"].shape[1] for x in labeled + inputs["images"])
    width = min(x["image"].shape[2] for x in labeled + inputs["images"])
    crop_all(labeled, height, width)
    crop_all(inputs["images"], height, width)

    backbone_calls = []
    one_pass.backbone.register_forward_hook(lambda module, args, out: backbone_calls.append(args[0].shape[0]))
    expected_losses, expected_grads = losses_and_gradients(two_pass, labeled, inputs)
    got_losses, got_grads = losses_and_gradients(one_pass, labeled, inputs)

    assert backbone_calls == [len(labeled) + len(inputs["images"])]  # one pass over all three images
    assert got_losses.keys() == expected_losses.keys() and "unsup_loss_cls" in got_losses
    for name, value in expected_losses.items():
        torch.testing.assert_close(got_losses[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)


def test_one_pass_is_refused_with_batch_statistics(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"SEMI.ONE_PASS_STUDENT": "True", "MODEL.RESNETS.NORM": "SyncBN"})
    with pytest.raises(ValueError, match="MODEL.RESNETS.NORM = 'SyncBN'"):
        validate_softteacher_config(cfg)
