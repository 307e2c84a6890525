"""Several CPU processes (gloo) through detectron2's ``DefaultTrainer``.

detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which
DistributedDataParallel refuses for a CPU module. While a trainer is built for a CPU model in
several processes, ``device_ids=None`` is passed instead; nothing changes on GPUs.
"""

import contextlib

from detectron2.engine import defaults
from detectron2.utils import comm


@contextlib.contextmanager
def cpu_ddp_support(cfg):
    if cfg.MODEL.DEVICE != "cpu" or comm.get_world_size() == 1:
        yield
        return
    original = defaults.create_ddp_model

    def create_cpu_ddp_model(model, **kwargs):
        kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    defaults.create_ddp_model = create_cpu_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original
