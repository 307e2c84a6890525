from .datasets import ensure_shapes, register_shapes

__all__ = ["ensure_shapes", "register_shapes"]
