"""A model's full observable state, to prove attach/explain/detach leave it exactly as found."""

from __future__ import annotations

import torch
from torch import nn


def _value(tensor: torch.Tensor) -> torch.Tensor | tuple:
    """A copy of the tensor; for offloaded (meta) tensors, what can be compared: shape and dtype."""
    if tensor.device.type == "meta":
        return ("meta", tuple(tensor.shape), tensor.dtype)
    return tensor.detach().clone()


def snapshot(model: nn.Module) -> dict:
    configs = {}
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            configs[name] = config._attn_implementation_internal
    return {
        "types": {name: type(m) for name, m in model.named_modules()},
        "instance_attrs": {name: sorted(k for k in vars(m) if k == "forward") for name, m in model.named_modules()},
        "hooks": {
            name: (
                list(m._forward_hooks),
                list(m._forward_pre_hooks),
                list(m._backward_hooks),
                list(m._backward_pre_hooks),
                list(m._state_dict_hooks),
            )
            for name, m in model.named_modules()
        },
        "global_hooks": (
            len(nn.modules.module._global_forward_hooks),
            len(nn.modules.module._global_forward_pre_hooks),
            len(nn.modules.module._global_backward_hooks),
        ),
        "attn": configs,
        "training": {name: m.training for name, m in model.named_modules()},
        "state": {k: _value(v) for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("types", "instance_attrs", "hooks", "global_hooks", "attn", "training", "requires_grad"):
        assert before[key] == after[key], key
    assert before["state"].keys() == after["state"].keys()
    for name, value in before["state"].items():
        other = after["state"][name]
        assert type(value) is type(other), name
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, name
    for name, grad in before["grads"].items():
        other = after["grads"][name]
        assert (grad is None) == (other is None), name
        if grad is not None:
            assert torch.equal(grad, other), name
