"""Two-process CPU training through detectron2's ``launch`` (gloo), for test_ddp.py.

    python tests/ddp_worker.py TINY_ROOT OUT_DIR [--nan-on-rank1] [--no-boxes-on-rank1]
    python tests/ddp_worker.py TINY_ROOT OUT_DIR --num-machines 2 --machine-rank R --dist-url URL

The first form launches 2 processes on one "machine"; the second is one of two "machines" with
one process each, started separately as on a cluster. With ``--no-boxes-on-rank1`` rank 1's
teacher returns no pseudo-box at all, so only rank 0 runs the unlabeled pass. Each rank saves its
student, teacher and last gradients to OUT_DIR/rank{r}.pt. With ``--nan-on-rank1``, rank 1's
loss_cls is NaN at iteration 1 and each rank writes the error that stopped it to
OUT_DIR/rank{r}.error.
"""

import argparse
import os

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import launch
from detectron2.utils import comm

from softteacher import SoftTeacherTrainer
from softteacher.datasets import register_semi_coco

from conftest import EVERY_DETECTION_IS_A_PSEUDO_BOX, make_loss_non_finite, soft_teacher_cfg


def register(root):
    if "tiny_shapes_val" not in DatasetCatalog.list():
        register_coco_instances("tiny_shapes_val", {}, os.path.join(root, "annotations", "instances_val.json"),
                                os.path.join(root, "val"))
        register_semi_coco("tiny_shapes_train", os.path.join(root, "annotations", "instances_train.json"),
                           os.path.join(root, "train"), 25, 1)


def worker(root, out_dir, nan_on_rank1=False, no_boxes_on_rank1=False, max_iter=3):
    register(root)
    torch.set_num_threads(1)
    overrides = {**EVERY_DETECTION_IS_A_PSEUDO_BOX, "SOLVER.IMS_PER_BATCH_LABELED": "2",
                 "SOLVER.IMS_PER_BATCH_UNLABELED": "4", "TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()",
                 "SEMI.EMA_MOMENTUM": "0.9"}
    if no_boxes_on_rank1 and comm.get_rank() == 1:
        overrides["SEMI.PSEUDO_SCORE_THRESH"] = "1.0"  # no score is above 1: no pseudo-box on rank 1
    cfg = soft_teacher_cfg("tiny_shapes_train.1@25", "tiny_shapes_train.1@25-unlabeled", out_dir, max_iter=max_iter,
                           **overrides)
    trainer = SoftTeacherTrainer(cfg)
    if nan_on_rank1 and comm.get_rank() == 1:
        make_loss_non_finite(trainer, "loss_cls", iteration=1)
    trainer.resume_or_load(resume=False)
    train_and_save(trainer, out_dir)
    # both ranks leave together: a rank exiting with the group alive can abort its peer. (An
    # unexpected error skips this and ends the launch at once, as it should.)
    comm.synchronize()
    torch.distributed.destroy_process_group()


def train_and_save(trainer, out_dir):
    try:
        trainer.train()
    except FloatingPointError as e:
        with open(os.path.join(out_dir, f"rank{comm.get_rank()}.error"), "w") as f:
            f.write(str(e))
        return
    torch.save(
        {
            "student": trainer.student.state_dict(),
            "teacher": trainer.teacher.state_dict(),
            "grads": {n: p.grad.clone() for n, p in trainer.student.named_parameters() if p.grad is not None},
            "unsup_skipped": trainer.storage.history("semi/pseudo_boxes_rpn").latest() == 0,
            "ema_steps": next(h for h in trainer._hooks if type(h).__name__ == "EMATeacherHook").step,
        },
        os.path.join(out_dir, f"rank{comm.get_rank()}.pt"),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out_dir")
    parser.add_argument("--nan-on-rank1", action="store_true")
    parser.add_argument("--no-boxes-on-rank1", action="store_true")
    parser.add_argument("--max-iter", type=int, default=3)
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{20000 + os.getpid() % 20000}")
    args = parser.parse_args()
    launch(
        worker, 2 // args.num_machines, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args.root, args.out_dir, args.nan_on_rank1, args.no_boxes_on_rank1, args.max_iter),
    )
