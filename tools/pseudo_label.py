#!/usr/bin/env python
"""The teacher's pseudo-labels on unlabeled images as a COCO json to correct in an annotation tool.

Run with ``--help`` for the options; the code is ``softteacher.tools.pseudo_label``."""

from softteacher.tools.pseudo_label import main

if __name__ == "__main__":
    main()
