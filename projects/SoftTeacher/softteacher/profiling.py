"""Counting what a training step asks of the device: operators dispatched and the points where
the host waits for the device.

Counted with torch's own dispatch machinery (``TorchDispatchMode``), so the counts are the same on
a CPU and on a GPU for the same code. A host synchronisation is an operator whose result the host
must read before it can go on: a value (``.item()``, ``.tolist()``, ``int()``, ``bool()``), or an
output whose size depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``,
``unique``, ``repeat_interleave`` with tensor repeats and no output size, NMS), or a copy to the host (``.cpu()``,
``.tolist()``, ``.numpy()``, ``.to("cpu")`` with the host named as a string). Copies are no
operator on a CPU tensor, so they are caught one level up (``TorchFunctionMode``), every call
counted: on a GPU some of those tensors may already be on the host, so this part is an upper
bound.
"""

import collections
import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_VALUE_READS = {"aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero"}
_DATA_DEPENDENT_SIZE = {
    "aten::nonzero", "aten::nonzero_static", "aten::masked_select", "aten::_unique", "aten::_unique2",
    "aten::unique_dim", "aten::unique_consecutive", "torchvision::nms",
}


def _is_mask(value):
    return isinstance(value, torch.Tensor) and value.dtype in (torch.bool, torch.uint8)


def is_host_sync(op_name, args, kwargs=None):
    """Whether an operator (its ``torch.ops`` name) with these arguments makes the host wait."""
    if op_name in _VALUE_READS or op_name in _DATA_DEPENDENT_SIZE:
        return True
    if op_name == "aten::repeat_interleave":  # with tensor repeats, unless told the output size
        return (kwargs or {}).get("output_size") is None
    if op_name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
        indices = args[1] if len(args) > 1 else ()
        return any(_is_mask(i) for i in indices if i is not None)
    return False


class DispatchCounter(TorchDispatchMode):
    """``with DispatchCounter() as counts:`` counts every operator dispatched inside (``ops``) and
    the host synchronisations among them (``host_syncs``), with per-operator tallies."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.host_syncs = 0
        self.by_op = collections.Counter()
        self.syncs_by_op = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.ops += 1
        self.by_op[name] += 1
        if is_host_sync(name, args, kwargs):
            self.host_syncs += 1
            self.syncs_by_op[name] += 1
        return func(*args, **(kwargs or {}))


_HOST_COPIES = {"cpu", "tolist", "numpy"}


class _HostCopyCounter(TorchFunctionMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        # .to("cpu") names the host; .to(device) with the model's device (the CPU on a CPU machine) does not
        to_host = name == "to" and "cpu" in (*args[1:], kwargs.get("device"))
        if name in _HOST_COPIES or to_host:
            self.counter.host_syncs += 1
            self.counter.syncs_by_op[f"Tensor.{name}"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_device_work():
    """``with count_device_work() as counts:`` operators dispatched (``counts.ops``) and host
    synchronisations (``counts.host_syncs``, with ``counts.syncs_by_op``) inside the block."""
    counter = DispatchCounter()
    with _HostCopyCounter(counter), counter:
        yield counter
