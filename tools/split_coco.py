#!/usr/bin/env python
"""Write the labeled subset and its unlabeled complement of a COCO json for a percent and fold.

Run with ``--help`` for the options; the code is ``softteacher.tools.split_coco``."""

from softteacher.tools.split_coco import main

if __name__ == "__main__":
    main()
