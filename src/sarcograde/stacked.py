"""Several DenseNets of one architecture run as ONE network: a horizontally fused stack.

At the paper's batch of 30 a DenseNet-161 step is bound by the launch of its ~1,000 small kernels,
not by arithmetic (issue 15: 2% of an H200). Training the K fold models of a run side by side
as one network launches each kernel once for all K: every convolution becomes a grouped
convolution (group k = member k), every batch norm one norm over K x C channels (statistics per
channel, hence per member), the dense concatenations are done member by member, and the head is
one batched matrix product. Member k sees only its own batch, in the channels of group k, so
the math of each member is that of the member run alone (Wang et al., HFTA, MLSys 2021).

The members stay ordinary `DenseNet` modules (state dicts, checkpoints and fold files do not
change): while stacked, their parameters and running statistics are views into the stack's
storage, so an optimiser step on a member, or a member trained alone for a batch, updates the
stack, and a stacked step updates the members. `unstack()` gives every member its own storage
again.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.densenet import _DenseLayer
from torch import nn

# Modules that act on each channel alone, so that K members' channels side by side are K members.
_CHANNELWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
                nn.Identity)


class StackedDenseNet(nn.Module):
    """K MONAI 2D DenseNets (same architecture) as one network of grouped layers.

    `forward(x)` takes `(B, K, 3, H, W)`, member k's batch at `x[:, k]`, and returns logits
    `(B, K, classes)`. In training mode each batch norm updates its member's running statistics
    and counter, as the member alone would.
    """

    def __init__(self, members: Sequence[nn.Module], channels_last: bool = False):
        super().__init__()
        if not members:
            raise ValueError("a stack needs at least one model")
        self.members = list(members)          # plain list: their tensors are the stack's views
        self.k = len(self.members)
        self.channels_last = channels_last
        template = self.members[0]
        for name, module in template.named_modules():
            if isinstance(module, nn.Dropout) and module.p > 0:
                raise ValueError(f"{name}: dropout draws its own random numbers per model; "
                                 "stacked training needs dropout 0")
            if not isinstance(module, (nn.Sequential, _DenseLayer, nn.Conv2d, nn.BatchNorm2d,
                                       nn.Linear, nn.Dropout, *_CHANNELWISE)) \
                    and module is not template:
                raise ValueError(f"{name}: {type(module).__name__} cannot be stacked")
        self.fused = nn.ParameterDict()
        self._buffers_of: dict[str, torch.Tensor] = {}
        for name, param in template.named_parameters():
            self.fused[name.replace(".", "/")] = nn.Parameter(
                self._fuse([m.get_parameter(name) for m in self.members]))
        for name, buffer in template.named_buffers():
            if buffer.is_floating_point():   # running mean and variance; counters stay per model
                self._buffers_of[name] = self._fuse([m.get_buffer(name) for m in self.members])
        self._point_members_at_stack()
        self._counters = [b for m in self.members for n, b in m.named_buffers()
                          if n.endswith("num_batches_tracked")]

    def _fuse(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        fused = torch.cat([t.detach() for t in tensors])
        if fused.ndim == 4 and self.channels_last:
            fused = fused.contiguous(memory_format=torch.channels_last)
        return fused

    def _point_members_at_stack(self) -> None:
        for name in [n for n, _ in self.members[0].named_parameters()]:
            fused = self.fused[name.replace(".", "/")].data
            for k, part in enumerate(fused.chunk(self.k)):
                self.members[k].get_parameter(name).data = part
        for name, fused in self._buffers_of.items():
            owner, _, attr = name.rpartition(".")
            for k, part in enumerate(fused.chunk(self.k)):
                self.members[k].get_submodule(owner)._buffers[attr] = part

    def unstack(self) -> None:
        """Give every member its own storage again (the stack is not used after this)."""
        for member in self.members:
            for param in member.parameters():
                param.data = param.data.clone()
            for module in member.modules():
                for attr, buffer in module._buffers.items():
                    if buffer is not None:
                        module._buffers[attr] = buffer.clone()

    def member_grads(self) -> None:
        """Hand each member its share of the stack's gradients (views, no copy) and drop them
        from the stack, so that each member's own optimiser can step."""
        for name in [n for n, _ in self.members[0].named_parameters()]:
            fused = self.fused[name.replace(".", "/")]
            parts = fused.grad.chunk(self.k) if fused.grad is not None else [None] * self.k
            for member, part in zip(self.members, parts):
                member.get_parameter(name).grad = part
            fused.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        if k != self.k:
            raise ValueError(f"input holds {k} batches for a stack of {self.k} models")
        x = x.reshape(b, k * x.shape[2], *x.shape[3:])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.training:
            torch._foreach_add_(self._counters, 1)
        return self._run(self.members[0], "", x)

    def _run(self, module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
        prefix = f"{name}." if name else ""
        if isinstance(module, _DenseLayer):
            return self._concat(x, self._run(module.layers, prefix + "layers", x))
        if isinstance(module, nn.Conv2d):
            return F.conv2d(x, self._param(prefix + "weight"), self._param(prefix + "bias"),
                            module.stride, module.padding, module.dilation,
                            module.groups * self.k)
        if isinstance(module, nn.BatchNorm2d):
            return F.batch_norm(x, self._buffers_of.get(prefix + "running_mean"),
                                self._buffers_of.get(prefix + "running_var"),
                                self._param(prefix + "weight"), self._param(prefix + "bias"),
                                self.training or module.running_mean is None,
                                0.1 if module.momentum is None else module.momentum, module.eps)
        if isinstance(module, nn.Linear):
            weight = self._param(prefix + "weight")
            out = torch.einsum("bki,koi->bko", x.reshape(len(x), self.k, -1),
                               weight.reshape(self.k, -1, weight.shape[-1]))
            bias = self._param(prefix + "bias")
            return out if bias is None else out + bias.reshape(self.k, -1)
        if isinstance(module, _CHANNELWISE) or isinstance(module, nn.Dropout):
            return module(x)
        for child_name, child in module.named_children():  # Sequential or the network itself
            x = self._run(child, prefix + child_name, x)
        return x

    def _param(self, name: str) -> torch.Tensor | None:
        key = name.replace(".", "/")
        return self.fused[key] if key in self.fused else None

    def _concat(self, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Each member's input channels followed by its new features (DenseNet's concatenation)."""
        b, _, h, w = x.shape
        if self.channels_last:  # concatenate along the innermost (channel) axis: no layout change
            joined = torch.cat([x.permute(0, 2, 3, 1).reshape(b, h, w, self.k, -1),
                                new.permute(0, 2, 3, 1).reshape(b, h, w, self.k, -1)], -1)
            return joined.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        joined = torch.cat([x.reshape(b, self.k, -1, h, w), new.reshape(b, self.k, -1, h, w)], 2)
        return joined.reshape(b, -1, h, w)
