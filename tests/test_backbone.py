"""The any-width ResNet-18-FPN is detectron2's R18-FPN at width 64, and narrower when asked."""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from softteacher import load_config
from softteacher.modeling import build_resnet18_fpn_backbone_any_width

from conftest import config_path


def shapes_cfg(width):
    cfg = load_config(config_path("Shapes", "Base-Shapes-R18-FPN.yaml"))
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = width
    return cfg


def shapes_of(module):
    return {name: tuple(p.shape) for name, p in module.state_dict().items()}


def test_width_64_has_exactly_detectron2s_parameters():
    cfg = shapes_cfg(64)
    ours = build_resnet18_fpn_backbone_any_width(cfg, ShapeSpec(channels=3))
    theirs = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    assert shapes_of(ours) == shapes_of(theirs)
    assert ours.output_shape() == theirs.output_shape()


def test_width_32_halves_every_resnet_stage():
    backbone = build_resnet18_fpn_backbone_any_width(shapes_cfg(32), ShapeSpec(channels=3))
    widths = {f: backbone.bottom_up.output_shape()[f].channels for f in ("res2", "res3", "res4", "res5")}
    assert widths == {"res2": 32, "res3": 64, "res4": 128, "res5": 256}
    assert {s.stride for s in backbone.output_shape().values()} == {4, 8, 16, 32, 64}
