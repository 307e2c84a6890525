#!/usr/bin/env python
"""Write the labeled subset and its unlabeled complement of a COCO json for a percent and fold.

    python tools/split_coco.py datasets/coco/annotations/instances_train2017.json \
        --percent 10 --fold 1 [--seed 1] [--out-dir DIR]

writes instances_train2017.1@10.json and instances_train2017.1@10-unlabeled.json, named like the
original Soft Teacher code's COCO splits. The same seed, percent and fold always give the same split.
"""

import argparse

from softteacher.data.splits import DEFAULT_SPLIT_SEED, write_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_file")
    parser.add_argument("--percent", type=float, nargs="+", required=True)
    parser.add_argument("--fold", type=int, nargs="+", default=[1])
    parser.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    for percent in args.percent:
        for fold in args.fold:
            for path in write_split(args.json_file, percent, fold, args.seed, args.out_dir):
                print(path)


if __name__ == "__main__":
    main()
