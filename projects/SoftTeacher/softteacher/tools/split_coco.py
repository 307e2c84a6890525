"""Write the labeled subset and its unlabeled complement of a COCO json for a percent and fold.

    python tools/split_coco.py datasets/coco/annotations/instances_train2017.json \
        --percent 1 5 10 --fold 1 2 3 4 5 [--out-dir DIR] [--method original]

writes instances_train2017.1@10.json and instances_train2017.1@10-unlabeled.json, named like the
original Soft Teacher code's COCO splits. By default the labeled images are the original code's
(tools/dataset/semi_coco.py: numpy seeded with the fold), so per-fold results compare with the
published ones; ``--method mmdetection`` gives mmdetection's tools/misc/split_coco.py selection,
``--method permutation --seed S`` this project's older scheme.
"""

import argparse

from softteacher.datasets.splits import DEFAULT_SPLIT_SEED, SPLIT_METHODS, write_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_file")
    parser.add_argument("--percent", type=float, nargs="+", required=True)
    parser.add_argument("--fold", type=int, nargs="+", default=[1])
    parser.add_argument("--method", choices=SPLIT_METHODS, default="original")
    parser.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED, help="with --method permutation only")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    for percent in args.percent:
        for fold in args.fold:
            for path in write_split(args.json_file, percent, fold, args.seed, args.out_dir, args.method):
                print(path)


if __name__ == "__main__":
    main()
