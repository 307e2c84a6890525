#!/usr/bin/env python
"""Train or evaluate with the Soft Teacher project, the detectron2 way.

Configs with DATASETS.TRAIN_UNLABELED train Soft Teacher (teacher and student; --eval-only
evaluates the teacher unless SEMI.EVAL_MODELS starts with "student"); others train supervised.

    python train_net.py --config-file configs/Shapes/soft_teacher_R18_FPN_10pct.yaml
    python train_net.py --config-file ... --num-gpus 8 [--resume] [KEY VALUE ...]
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS path/to/model.pth
"""

import logging
import sys

import torch
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from softteacher import SoftTeacherTrainer, load_config
from softteacher.config import check_initial_weights, validate_softteacher_config
from softteacher.data import LabeledDatasetMapper, register_custom_from_config
from softteacher.engine.checkpoint import SafeCheckpointer
from softteacher.engine.cpu_ddp import cpu_ddp_support
from softteacher.engine.evaluation import build_detection_evaluator
from softteacher.engine.training_curves import TrainingCurvesHook


class Trainer(DefaultTrainer):
    """Supervised training (configs without DATASETS.TRAIN_UNLABELED), with the labeled images
    augmented as Soft Teacher's labeled stream (INPUT.LABELED_COLOR_AUG), so the two compare
    like for like."""

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


def setup(args):
    cfg = load_config(args.config_file, args.opts)  # on the CPU when there is no CUDA
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu" and not cfg.DATASETS.TRAIN_UNLABELED:
        # detectron2's AMPTrainer (supervised runs) needs CUDA; Soft Teacher's step uses bfloat16
        logging.getLogger("softteacher").warning("SOLVER.AMP.ENABLED: no CUDA, supervised training runs in float32")
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    register_custom_from_config(cfg)
    validate_softteacher_config(cfg)
    check_initial_weights(cfg, resume=args.resume)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="softteacher")
    return cfg


def trainer_class(cfg):
    return SoftTeacherTrainer if cfg.DATASETS.TRAIN_UNLABELED else Trainer


def main(args):
    cfg = setup(args)
    trainer = trainer_class(cfg)
    if args.eval_only:
        model = trainer.build_model(cfg)
        if trainer is SoftTeacherTrainer:
            SoftTeacherTrainer.load_for_evaluation(cfg, model, resume=args.resume)
        else:
            SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
                cfg.MODEL.WEIGHTS, resume=args.resume
            )
        results = trainer.test(cfg, model)
        verify_results(cfg, results)
        return results
    trainer = trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def warn_without_cuda(args):
    """Say so when --num-gpus asks for GPUs this machine does not have."""
    if args.num_gpus > 1 and not torch.cuda.is_available():
        print(f"WARNING: CUDA is not available: --num-gpus {args.num_gpus} runs {args.num_gpus} CPU "
              "processes (gloo) on this machine; check `python -m softteacher.env` for the torch build "
              "and the GPUs it sees", file=sys.stderr)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    warn_without_cuda(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
