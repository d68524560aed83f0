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
again. A stack of one (in the model's own layout) copies nothing: its storage is the model's,
which is how Grad-CAM runs one model at a time with the stack's short backward
(`attention.stacked_cam`) without disturbing a larger stack the model belongs to.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.densenet import _DenseLayer
from torch import nn

# The stacks alive, by the ids of their members (a live stack holds its members, so the ids are
# theirs): `StackedDenseNet.of` hands out the stack already built over a set of models.
_LIVE: "weakref.WeakValueDictionary[tuple[int, ...], StackedDenseNet]" = \
    weakref.WeakValueDictionary()

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
        self._capture: str | None = None
        self._captured: torch.Tensor | None = None
        self._grad_after_capture = False
        _LIVE[tuple(map(id, self.members))] = self

    @classmethod
    def of(cls, members: Sequence[nn.Module], channels_last: bool = False) -> "StackedDenseNet":
        """The live stack of exactly these models (in this order and layout) while they still
        share its storage, such as an `Ensemble.stack()`, else a new one: the models are never
        held twice on the device."""
        stack = _LIVE.get(tuple(map(id, members)))
        if stack is None or stack.channels_last != channels_last or not stack._holds_members():
            stack = cls(members, channels_last=channels_last)
        return stack

    def _holds_members(self) -> bool:
        """Whether the members' parameters are still this stack's views (no `unstack()`, no
        later stack over them)."""
        key, fused = next(iter(self.fused.items()))
        return all(m.get_parameter(key.replace("/", ".")).data_ptr() == part.data_ptr()
                   for m, part in zip(self.members, fused.data.chunk(self.k)))

    def _fuse(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The members' tensors side by side; a stack of one keeps its model's own tensor (no
        copy, so the model's storage, possibly a view into a larger stack, stays as it is)."""
        if len(tensors) == 1 and not (tensors[0].ndim == 4 and self.channels_last):
            return tensors[0].detach()
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

    def forward(self, x: torch.Tensor, capture: str | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits `(B, K, classes)` of `x` `(B, K, 3, H, W)`.

        `capture` names a module of the members (Grad-CAM's layer, "features.norm5"): the stack
        then returns `(logits, activation)`, the activation being that module's output for all
        members `(B, K x C, h, w)`, member k's in channels [k C, (k + 1) C). When grad is enabled
        it is a leaf that requires grad, so `torch.autograd.grad(score, activation)` is the
        layer's gradient; the layers before it run without autograd (nothing is kept for them,
        nothing is traversed back through them).
        """
        if capture is None:
            return self._forward(x)
        self._capture, self._grad_after_capture = capture, torch.is_grad_enabled()
        try:
            with torch.no_grad():   # `_run` turns grad back on after the captured module
                logits = self._forward(x)
            captured = self._captured
        finally:
            self._capture, self._captured = None, None
        if captured is None:
            raise ValueError(f"{capture}: no such module in the stacked network")
        return logits, captured

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
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
        x = self._layer(module, name, x)
        if self._capture is not None and name == self._capture:
            x = x.detach().requires_grad_(self._grad_after_capture)
            torch.set_grad_enabled(self._grad_after_capture)  # the layers after it are recorded
            self._captured = x
        return x

    def _layer(self, module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
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
