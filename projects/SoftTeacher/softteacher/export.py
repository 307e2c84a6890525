"""Export the teacher or the student of a Soft Teacher checkpoint as a plain detectron2 model.

The result is what detectron2 users load without this project's training code: ``model.pth``
holding ``{"model": state_dict}`` and ``config.yaml`` for ``GeneralizedRCNN`` with
``StandardROIHeads`` (the student's extra heads add no parameters), containing only detectron2's
own keys. A model whose backbone is this project's (the CPU-sized ``Shapes`` configs) still needs
``import softteacher`` to register that backbone; the COCO and VOC models are pure detectron2.
"""

import json
import os

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import BACKBONE_REGISTRY

EXPORTABLE = ("teacher", "student")
# beside model.pth: {"thing_classes": [...]}, the class names detectron2's config has no key for
METADATA_FILE = "metadata.json"


def load_checkpoint(path):
    """A checkpoint's dict, read without running pickled code (``weights_only``)."""
    with open(path, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def model_state(checkpoint, which):
    """The weights of ``which`` ("teacher" or "student") from a loaded checkpoint; a checkpoint
    without a teacher (a supervised run's) gives its one model for either."""
    if which not in EXPORTABLE:
        raise ValueError(f"which = {which!r}: choose one of {EXPORTABLE}")
    key = "teacher" if which == "teacher" and "teacher" in checkpoint else "model"
    if key not in checkpoint:
        raise KeyError(f"the checkpoint has no {key!r} weights (keys: {sorted(checkpoint)})")
    return checkpoint[key]


def is_detectron2_backbone(name):
    """Whether detectron2 itself registers the backbone builder ``name`` (a model that needs only it)."""
    return name in BACKBONE_REGISTRY and BACKBONE_REGISTRY.get(name).__module__.startswith("detectron2.")


def detectron2_only(cfg, reference=None):
    """A copy of ``cfg`` keeping only the keys detectron2's own ``get_cfg()`` knows."""
    reference = reference if reference is not None else get_cfg()
    out = CfgNode()
    for key, value in cfg.items():
        if key not in reference:
            continue
        out[key] = detectron2_only(value, reference[key]) if isinstance(value, CfgNode) else value
    return out


def export_plain_model(cfg, checkpoint_path, which, output_dir, thing_classes=None, category_ids=None):
    """Write ``model.pth`` and ``config.yaml`` of a plain detectron2 Faster R-CNN, and the class
    names and json category ids (``metadata.json``; the names also atop the config) when given;
    return the first two paths."""
    state = model_state(load_checkpoint(checkpoint_path), which)
    os.makedirs(output_dir, exist_ok=True)
    weights = os.path.join(output_dir, "model.pth")
    torch.save({"model": state, "__author__": f"softteacher export ({which} of {checkpoint_path})"}, weights)
    plain = detectron2_only(cfg)
    plain.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    plain.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    if plain.MODEL.PROPOSAL_GENERATOR.NAME == "PseudoLabelRPN":  # detectron2's RPN, same parameters
        plain.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    plain.MODEL.WEIGHTS = weights
    plain.OUTPUT_DIR = output_dir
    config = os.path.join(output_dir, "config.yaml")
    header = ""
    if thing_classes:
        if len(thing_classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(f"{len(thing_classes)} class names for MODEL.ROI_HEADS.NUM_CLASSES = "
                             f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}")
        with open(os.path.join(output_dir, METADATA_FILE), "w") as f:
            json.dump({"thing_classes": list(thing_classes),
                       "category_ids": list(category_ids or range(1, len(thing_classes) + 1))}, f, indent=1)
        header += f"# classes (contiguous ids 0..{len(thing_classes) - 1}): {', '.join(thing_classes)}\n"
    if not is_detectron2_backbone(plain.MODEL.BACKBONE.NAME):
        header += (f"# MODEL.BACKBONE.NAME {plain.MODEL.BACKBONE.NAME} is the Soft Teacher project's: "
                   "`import softteacher` (pip install -e . in its repository) before build_model\n")
    with open(config, "w") as f:
        f.write(header + plain.dump())
    return weights, config
