"""The operator and host-synchronisation counts of softteacher.profiling against hand counts."""

import torch

from softteacher.profiling import count_device_work


def test_counts_operators_and_each_kind_of_host_synchronisation():
    x = torch.arange(6.0)
    with count_device_work() as counts:
        y = x * 2 + 1                      # 2 operators, no sync
        y.sum().item()                     # sum + a value read: 1 sync
        x[x > 3]                           # comparison + boolean-mask indexing: 1 sync
        x[torch.tensor([0, 2])]            # indexing with indices: no sync
        torch.repeat_interleave(torch.arange(2), torch.tensor([1, 2]))                 # 1 sync
        torch.repeat_interleave(torch.arange(2), torch.tensor([1, 2]), output_size=3)  # told the size: none
        x.tolist()                         # a copy to the host: 1 sync
        x.cpu()                            # 1 sync (counted on a CPU tensor too)
        x.to(torch.device("cpu"))          # the model's device, here the CPU: not counted
        x.to("cpu")                        # the host, named: 1 sync
    assert counts.host_syncs == 6
    assert counts.syncs_by_op == {"aten::_local_scalar_dense": 1, "aten::index": 1, "aten::repeat_interleave": 1,
                                  "Tensor.tolist": 1, "Tensor.cpu": 1, "Tensor.to": 1}
    assert counts.by_op["aten::mul"] == 1 and counts.by_op["aten::add"] == 1 and counts.by_op["aten::index"] == 2
    assert counts.ops == sum(counts.by_op.values())
