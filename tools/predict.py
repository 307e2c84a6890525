#!/usr/bin/env python
"""Run a trained model on your own images: drawn pictures and one COCO-results json.

Run with ``--help`` for the options; the code is ``softteacher.tools.predict``."""

from softteacher.tools.predict import main

if __name__ == "__main__":
    main()
