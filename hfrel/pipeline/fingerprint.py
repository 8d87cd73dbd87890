"""What makes a result reusable: a digest of the weights, the processor and the settings.

A rerun reuses an image's files only when the fingerprint in its record.json equals this run's, so
the weights digest must see every change, also one made through `param.data` (which leaves
`tensor._version` as it was): it is computed afresh each run rather than cached on version
counters. It hashes each tensor's memory where it lies on the CPU (a buffer view, no copy);
benchmarks/fingerprint.py measures what that saves.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

import hfrel
from hfrel._errors import InputError
from hfrel.pipeline.settings import Settings


def digest(*parts: bytes | str | memoryview) -> str:
    """sha256 of the parts, each prefixed by its length (so ("ab", "c") and ("a", "bc") differ)."""
    hasher = hashlib.sha256()
    for part in parts:
        data = memoryview(part.encode() if isinstance(part, str) else part)
        hasher.update(data.nbytes.to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes; a CPU tensor is read in place, others copied once."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return digest(str(tensor.dtype), str(tuple(tensor.shape)), memoryview(flat.view(torch.uint8).numpy()))


def weights_digest(model: torch.nn.Module) -> str:
    """A sha256 of the model's configuration and every parameter and buffer, by name.

    Weights that accelerate offloads (meta tensors between calls) are loaded module by module to be
    read; a meta tensor no hook can load is an error, not a guess.
    """
    from accelerate.utils import align_module_device, has_offloaded_params

    tensors = dict(model.state_dict(keep_vars=True))
    digests = {name: tensor_digest(t) for name, t in tensors.items() if t.device.type != "meta"}
    for prefix, module in model.named_modules():
        if not has_offloaded_params(module):
            continue
        with align_module_device(module, torch.device("cpu")):
            for name, tensor in module.state_dict(keep_vars=True).items():
                full = f"{prefix}.{name}" if prefix else name
                if full not in digests and tensor.device.type != "meta":
                    digests[full] = tensor_digest(tensor)
    unread = sorted(set(tensors) - set(digests))
    if unread:
        raise InputError(
            f"the model's weight {unread[0]} is on the meta device and no accelerate hook loads it: load the "
            f"model's weights before explaining"
        )
    config = model.config.to_json_string() if hasattr(model, "config") else type(model).__name__
    return digest(config, *(f"{name}={digests[name]}" for name in sorted(digests)))


def run_fingerprint(model: torch.nn.Module, processor: Any, settings: Settings) -> dict[str, Any]:
    """Everything besides the input that determines an image's files; a record is reused only if equal."""
    import transformers

    to_json = getattr(processor, "to_json_string", None)
    processor_text = to_json() if callable(to_json) else repr(processor)
    return {
        "hfrel": hfrel.__version__,
        "transformers": transformers.__version__,
        "model": weights_digest(model),
        "processor": digest(type(processor).__name__, processor_text),
        "classes": digest(json.dumps(settings.class_names, sort_keys=True, ensure_ascii=False)),
        "methods": list(settings.methods),
        "labels": None if settings.labels is None else list(settings.labels),
        "label_column": settings.label_column,
        "start_layer": settings.start_layer,
        "top_k": settings.top_k,
        "cmap": settings.cmap,
        "alpha": settings.alpha,
        "original_size": settings.original_size,
        "text_padding": settings.text_padding,
    }
