#!/usr/bin/env python
"""Will unlabeled images pay on your data? A learning curve, its forecasts and a verdict.

Run with ``--help`` for the options; the code is ``softteacher.tools.forecast``."""

from softteacher.tools.forecast import main

if __name__ == "__main__":
    main()
