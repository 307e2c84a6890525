"""The evaluator a dataset asks for, as detectron2's own train_net.py picks it."""

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator


def build_detection_evaluator(cfg, dataset_name, output_folder=None):
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    raise ValueError(
        f"dataset {dataset_name!r} has evaluator_type {evaluator_type!r}; "
        "this project evaluates box detection with 'coco' or 'pascal_voc'"
    )
