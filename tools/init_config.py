#!/usr/bin/env python
"""Write a starting config fitted to your data: sizes, anchors, classes, schedule, recipe.

Run with ``--help`` for the options; the code is ``softteacher.tools.init_config``."""

from softteacher.tools.init_config import main

if __name__ == "__main__":
    main()
