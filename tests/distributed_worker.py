"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc_per_node 2`` (gloo, CPU): checks of
``bench.training.distributed`` that need a real process group but no training run, then ``colorbench ablate`` with the
command line's arguments in the same group (one launch of torchrun: CI's time is short). Exits non-zero on a
failed check."""
from __future__ import annotations

import torch
from torch import nn

from bench import ablate
from bench.training import distributed


def check_batchnorm() -> None:
    """A synchronised BatchNorm on each rank's half equals BatchNorm on the whole batch: outputs, running
    statistics, the input's gradient (of the mean loss over all ranks) and the averaged parameter gradients."""
    torch.manual_seed(0)  # the same global batch and loss weights on every rank
    x, w = torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 5, 5, dtype=torch.float64)
    full = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        full.weight.uniform_(0.5, 1.5)
        full.bias.uniform_(-0.5, 0.5)
    model = nn.Sequential(nn.BatchNorm2d(3).double())
    model[0].load_state_dict(full.state_dict())
    distributed._sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(model[0], distributed.GlooSyncBatchNorm)

    xf = x.clone().requires_grad_(True)
    y_full = full(xf)
    (y_full * w).mean().backward()
    xs = distributed.shard(x).clone().requires_grad_(True)
    y = model(xs)
    (y * distributed.shard(w)).mean().backward()  # this rank's mean; the global loss is the mean over the ranks
    assert torch.allclose(y, distributed.shard(y_full), atol=1e-12)
    assert torch.allclose(xs.grad, distributed.world_size() * distributed.shard(xf.grad), atol=1e-12)
    for p, q in ((model[0].weight, full.weight), (model[0].bias, full.bias)):
        assert torch.allclose(distributed.mean(p.grad), q.grad, atol=1e-12)  # what DDP averages
    assert torch.allclose(model[0].running_mean, full.running_mean, atol=1e-12)
    assert torch.allclose(model[0].running_var, full.running_var, atol=1e-12)


def check_messages() -> None:
    """``broadcast`` gives rank 0's object, ``mean`` the mean over the ranks, and ``on_main`` runs on rank 0 alone
    and stops every rank when it raises there."""
    assert distributed.broadcast({"key": "m/c/0"} if distributed.is_main() else None) == {"key": "m/c/0"}
    assert distributed.mean(torch.tensor([float(distributed.rank())])).item() == 0.5
    ran = []
    distributed.on_main(ran.append, 1)
    assert ran == ([1] if distributed.is_main() else [])

    def fail(step):
        raise KeyError(step)

    try:
        distributed.on_main(fail, 7)
    except KeyError:
        assert distributed.is_main()
    except distributed.Stopped:
        assert not distributed.is_main()
    else:
        raise AssertionError("on_main did not stop this rank")


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    assert distributed.init(torch.device("cpu")) == torch.device("cpu") and distributed.world_size() == 2
    check_batchnorm()
    check_messages()
    print(f"rank {distributed.rank()}: ok", flush=True)
    sys.exit(ablate.main(sys.argv[1:]))  # joins the group made above
