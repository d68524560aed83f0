"""The stacked DenseNet: K networks as one grouped network, each member's math unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from sarcograde import model as model_lib
from sarcograde.train.stacked_densenet import StackedDenseNet

SMALL = {"architecture": "densenet", "init_features": 8, "growth_rate": 4, "block_config": [2, 3]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def members(k: int, channels_last: bool = False, **cfg) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    nets = [model_lib.build_model({**SMALL, **cfg}) for _ in range(k)]
    return [n.to(memory_format=torch.channels_last) for n in nets] if channels_last else nets


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_training_step_gives_each_member_its_own_logits_gradients_and_statistics(channels_last):
    nets = members(3, channels_last)
    alone = copy.deepcopy(nets)
    stack = StackedDenseNet(nets, channels_last=channels_last).train()
    x = torch.randn(5, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits = stack(x)
    (logits * torch.arange(1.0, 4.0)[None, :, None]).sum().backward()
    stack.member_grads()
    for k, (net, ref) in enumerate(zip(nets, alone)):
        ref.train()
        out = ref(x[:, k])
        (out * (k + 1)).sum().backward()
        torch.testing.assert_close(logits[:, k], out, rtol=1e-4, atol=1e-5)
        for (name, p), q in zip(net.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
        mine, theirs = net.state_dict(), ref.state_dict()
        for name in theirs:  # running means, variances and batch counters moved as alone
            torch.testing.assert_close(mine[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)


def test_members_and_stack_share_storage_until_unstacked():
    nets = members(2)
    stack = StackedDenseNet(nets)
    first_conv = nets[1].features.conv0.weight
    with torch.no_grad():
        first_conv.add_(1.0)  # an optimiser step on a member is a step of the stack
    torch.testing.assert_close(stack.fused["features/conv0/weight"][8:], first_conv)
    stack.eval()
    x = torch.randn(4, 1, 3, 32, 32).expand(-1, 2, -1, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(stack(x)[:, 1], nets[1].eval()(x[:, 1]), rtol=1e-4,
                                   atol=1e-5)
    stack.unstack()
    with torch.no_grad():
        first_conv.add_(1.0)
    assert not torch.equal(stack.fused["features/conv0/weight"][8:], first_conv)
    saved = {k: v.clone() for k, v in nets[0].state_dict().items()}
    assert sum(v.untyped_storage().nbytes() for v in nets[0].state_dict().values()) == \
        sum(v.untyped_storage().nbytes() for v in saved.values())  # no hidden shared storage


def test_refuses_what_it_cannot_stack():
    with pytest.raises(ValueError, match="dropout"):
        StackedDenseNet(members(2, dropout=0.2))
    stack = StackedDenseNet(members(2))
    with pytest.raises(ValueError, match="3 batches for a stack of 2"):
        stack(torch.zeros(2, 3, 3, 32, 32))
