#!/usr/bin/env python
"""Train or evaluate with the Soft Teacher project, the detectron2 way.

Configs with DATASETS.TRAIN_UNLABELED train Soft Teacher (teacher and student; --eval-only
evaluates the teacher unless SEMI.EVAL_MODELS starts with "student"); others train supervised.

    python train_net.py --config-file configs/Shapes/soft_teacher_R18_FPN_10pct.yaml
    python train_net.py --config-file ... --num-gpus 8 [--resume] [KEY VALUE ...]
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS path/to/model.pth
"""

from detectron2.engine import default_argument_parser, launch

from softteacher.engine.launch import main, warn_without_cuda

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
