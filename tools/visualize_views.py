#!/usr/bin/env python
"""Render what the student and teacher see: labeled views, and unlabeled weak/strong pairs.

Run with ``--help`` for the options; the code is ``softteacher.tools.visualize_views``."""

from softteacher.tools.visualize_views import main

if __name__ == "__main__":
    main()
