#!/usr/bin/env python
"""Export the teacher (default) or the student of a Soft Teacher checkpoint as a plain detectron2
Faster R-CNN: ``OUTPUT/model.pth``, ``OUTPUT/config.yaml`` and ``OUTPUT/metadata.json`` (class
names and json category ids, which detectron2's config has no key for).

Run with ``--help`` for the options; the code is ``softteacher.tools.export_model``."""

from softteacher.tools.export_model import main

if __name__ == "__main__":
    main()
