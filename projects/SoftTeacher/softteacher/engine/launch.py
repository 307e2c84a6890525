"""What ``train_net.py`` runs: set-up from the command line, then training or evaluation.

Configs with DATASETS.TRAIN_UNLABELED train Soft Teacher (teacher and student; --eval-only
evaluates the teacher unless SEMI.EVAL_MODELS starts with "student"); others train supervised.
"""

import logging
import os
import sys

import torch
from detectron2.engine import default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..config_checks import check_initial_weights, validate_softteacher_config
from ..datasets import register_custom_from_config
from .checkpoint import SafeCheckpointer
from .trainer import SoftTeacherTrainer, SupervisedTrainer


def setup(args):
    cfg = load_config(args.config_file, args.opts)  # on the CPU when there is no CUDA
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu" and not cfg.DATASETS.TRAIN_UNLABELED:
        # detectron2's AMPTrainer (supervised runs) needs CUDA; Soft Teacher's step uses bfloat16
        logging.getLogger("softteacher").warning("SOLVER.AMP.ENABLED: no CUDA, supervised training runs in float32")
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    check_eval_weights(cfg, args)
    register_custom_from_config(cfg)
    validate_softteacher_config(cfg)
    check_initial_weights(cfg, resume=args.resume)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="softteacher")
    return cfg


def check_eval_weights(cfg, args):
    """Refuse ``--eval-only`` with nothing to evaluate: no MODEL.WEIGHTS and no checkpoint that
    ``--resume`` would load (it would evaluate random weights)."""
    resumable = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if args.eval_only and not cfg.MODEL.WEIGHTS and not resumable:
        raise ValueError("--eval-only with MODEL.WEIGHTS empty would evaluate random weights: add "
                         "MODEL.WEIGHTS path/to/model_final.pth (or --resume with a checkpoint in OUTPUT_DIR)")


def trainer_class(cfg):
    return SoftTeacherTrainer if cfg.DATASETS.TRAIN_UNLABELED else SupervisedTrainer


def main(args):
    """Train, or with ``--eval-only`` evaluate, as detectron2's ``tools/train_net.py`` does."""
    cfg = setup(args)
    trainer = trainer_class(cfg)
    if args.eval_only:
        model = trainer.build_model(cfg)
        if trainer is SoftTeacherTrainer:
            SoftTeacherTrainer.load_for_evaluation(cfg, model, resume=args.resume)
        else:
            SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = trainer.test(cfg, model)
        verify_results(cfg, results)
        return results
    trainer = trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train() or getattr(trainer, "_last_eval_results", None)  # DefaultTrainer returns
    if comm.is_main_process():  # its results only when it checks TEST.EXPECTED_RESULTS
        print(training_summary(cfg, args.config_file, results), flush=True)
    return results


def training_summary(cfg, config_file, results):
    """What a finished run left and what to try next, for a person to read."""
    out = cfg.OUTPUT_DIR
    lines = ["", "Training finished."]
    models = results if isinstance(results, dict) and "bbox" not in results else {"model": results or {}}
    for name, result in models.items():
        bbox = (result or {}).get("bbox")
        if bbox:
            lines.append(f"  {name} AP {bbox['AP']:.1f}  (AP50 {bbox['AP50']:.1f}, AP75 {bbox['AP75']:.1f}) "
                         f"on {', '.join(cfg.DATASETS.TEST)}")
    pictures = os.path.join(out, "pseudo_labels")
    found = sorted(os.listdir(pictures)) if os.path.isdir(pictures) else []
    lines += [
        f"  AP curves:      {os.path.join(out, 'training_curves.png')}",
        *([f"  pseudo-labels:  {os.path.join(pictures, found[-1])} (and {len(found) - 1} earlier)"] if found else []),
        f"  checkpoint:     {os.path.join(out, 'model_final.pth')}",
        f"  everything:     tensorboard --logdir {out}",
        "Next, the model on your own images (a folder, files or a glob):",
        f"  python tools/predict.py --config-file {config_file} --weights {os.path.join(out, 'model_final.pth')} "
        f"--input <your images> --output {os.path.join(out, 'predictions')}",
    ]
    return "\n".join(lines)


def warn_without_cuda(args):
    """Say so when --num-gpus asks for GPUs this machine does not have."""
    if args.num_gpus > 1 and not torch.cuda.is_available():
        print(f"WARNING: CUDA is not available: --num-gpus {args.num_gpus} runs {args.num_gpus} CPU "
              "processes (gloo) on this machine; check `python -m softteacher.env` for the torch build "
              "and the GPUs it sees", file=sys.stderr)
