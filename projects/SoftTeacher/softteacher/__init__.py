"""Soft Teacher (Xu et al., ICCV 2021) as a detectron2 project.

Importing the package registers its datasets (and, as they land, its model parts) with
detectron2's registries.
"""

from .config import add_softteacher_config
from .data import register_shapes

register_shapes()

__all__ = ["add_softteacher_config"]
