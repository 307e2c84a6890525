"""Soft Teacher training on the tiny data, to be killed by test_failure_handling.py.

    python tests/kill_worker.py TINY_ROOT OUT_DIR MAX_ITER PERIOD [--resume] [--die-in-save N]

Writes the last finished iteration to OUT_DIR/progress after every step (after the checkpoint
hook). With --die-in-save N the process SIGKILLs itself halfway through writing its N-th
checkpoint file.
"""

import argparse
import io
import os
import signal

import torch
from ddp_worker import register
from detectron2.engine import HookBase

from softteacher import SoftTeacherTrainer

from conftest import soft_teacher_cfg

LABELED, UNLABELED = "tiny_shapes_train.1@25", "tiny_shapes_train.1@25-unlabeled"


def kill_cfg(out_dir, max_iter, period):
    return soft_teacher_cfg(
        LABELED, UNLABELED, out_dir, max_iter=max_iter,
        **{"SOLVER.CHECKPOINT_PERIOD": str(period), "TEST.EVAL_PERIOD": "0",
           "SEMI.EVAL_MODELS": "()", "SEMI.VIS_PERIOD": "0", "SEMI.EMA_MOMENTUM": "0.9"},
    )


class ProgressHook(HookBase):
    def __init__(self, path):
        self.path = path

    def after_step(self):
        with open(self.path, "w") as f:
            f.write(str(self.trainer.iter))


def die_during_save(n):
    """Make the n-th torch.save write half of its bytes, then SIGKILL this process."""
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < n:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out_dir")
    parser.add_argument("max_iter", type=int)
    parser.add_argument("period", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--die-in-save", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    register(args.root)
    if args.die_in_save:
        die_during_save(args.die_in_save)
    trainer = SoftTeacherTrainer(kill_cfg(args.out_dir, args.max_iter, args.period))
    trainer.register_hooks([ProgressHook(os.path.join(args.out_dir, "progress"))])
    trainer.resume_or_load(resume=args.resume)
    trainer.train()


if __name__ == "__main__":
    main()
