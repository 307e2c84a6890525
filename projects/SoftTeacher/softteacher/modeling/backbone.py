"""A ResNet-18-FPN of any width, for CPU-sized training from scratch.

detectron2's ``build_resnet_backbone`` fixes ResNet-18/34 at 64 channels in res2. This builder
assembles the same blocks (``BasicStem``, ``BasicBlock`` stages, ``FPN``) with
``MODEL.RESNETS.RES2_OUT_CHANNELS`` channels in res2 (doubling per stage) and
``MODEL.RESNETS.STEM_OUT_CHANNELS`` in the stem; with 64 and 64 it is detectron2's R18-FPN.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem


@BACKBONE_REGISTRY.register()
def build_resnet18_fpn_backbone_any_width(cfg, input_shape: ShapeSpec):
    resnets = cfg.MODEL.RESNETS
    if resnets.DEPTH != 18:
        raise ValueError(f"MODEL.RESNETS.DEPTH = {resnets.DEPTH}: this backbone builds ResNet-18 only")
    norm = resnets.NORM
    stem = BasicStem(input_shape.channels, resnets.STEM_OUT_CHANNELS, norm=norm)
    stages, in_channels = [], resnets.STEM_OUT_CHANNELS
    for index in range(4):
        out_channels = resnets.RES2_OUT_CHANNELS * 2**index
        stages.append(
            ResNet.make_stage(
                BasicBlock, 2, stride_per_block=[1 if index == 0 else 2, 1],
                in_channels=in_channels, out_channels=out_channels, norm=norm,
            )
        )
        in_channels = out_channels
    bottom_up = ResNet(stem, stages, out_features=resnets.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
