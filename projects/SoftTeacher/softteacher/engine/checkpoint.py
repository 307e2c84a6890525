"""Checkpoints that survive a kill and load without running pickled code.

``SafeCheckpointer`` is detectron2's ``DetectionCheckpointer`` with three changes:

- a checkpoint is written under a temporary name, flushed to disk and renamed into place, and
  ``last_checkpoint`` is replaced the same way, so a kill at any moment leaves every checkpoint
  name and ``last_checkpoint`` pointing at a complete file;
- ``.pth`` files are read with ``torch.load(weights_only=True)``;
- ``--resume`` only follows ``last_checkpoint`` to a ``.pth`` file: pickle formats (``.pkl``
  model-zoo files) are read only when the user names them in MODEL.WEIGHTS.
"""

import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

PARTIAL_PREFIX = ".partial-"


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class SafeCheckpointer(DetectionCheckpointer):
    _deferred_tag = False

    @classmethod
    def replacing(cls, checkpointer):
        """A ``SafeCheckpointer`` with the model, folder and checkpointables of ``checkpointer``."""
        return cls(
            checkpointer.model, checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk, **checkpointer.checkpointables,
        )

    def _local(self):
        return bool(self.save_dir) and os.path.isdir(self.save_dir)

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk or not self._local():
            return super().save(name, **kwargs)
        partial = os.path.join(self.save_dir, f"{PARTIAL_PREFIX}{name}.pth")
        final = os.path.join(self.save_dir, f"{name}.pth")
        self._deferred_tag = True  # the parent tags the partial file; tag the final one instead
        try:
            super().save(f"{PARTIAL_PREFIX}{name}", **kwargs)
        finally:
            self._deferred_tag = False
        _fsync(partial)
        os.replace(partial, final)
        self.tag_last_checkpoint(os.path.basename(final))
        self.logger.info("Checkpoint complete: %s", final)

    def tag_last_checkpoint(self, last_filename_basename):
        if self._deferred_tag:
            return
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        tag = os.path.join(self.save_dir, "last_checkpoint")
        partial = os.path.join(self.save_dir, PARTIAL_PREFIX + "last_checkpoint")
        with open(partial, "w") as f:
            f.write(last_filename_basename)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, tag)

    def resume_or_load(self, path, *, resume=True):
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            if not last.endswith(".pth"):
                raise ValueError(
                    f"{os.path.join(self.save_dir, 'last_checkpoint')} names {last!r}: --resume "
                    "only reads .pth checkpoints; name other formats in MODEL.WEIGHTS"
                )
        return super().resume_or_load(path, resume=resume)

    def _torch_load(self, f):
        return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
