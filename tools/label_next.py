#!/usr/bin/env python
"""Rank unlabeled images by how unsure the model is about them: which to label next.

Run with ``--help`` for the options; the code is ``softteacher.tools.label_next``."""

from softteacher.tools.label_next import main

if __name__ == "__main__":
    main()
