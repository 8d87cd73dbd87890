"""Attach and forget: a model attached and never detached is freed with its explainer, an explainer
dropped without detach leaves its model as found, and nothing hfrel keeps globally grows per model."""

from __future__ import annotations

import gc
import sys
import weakref

import hfrel
from tests import tiny
from tests.state import assert_same, snapshot


def _global_sizes() -> dict[str, int]:
    """The size of every dict, list and set that a loaded hfrel module holds at module level."""
    sizes = {}
    for name, module in list(sys.modules.items()):
        if name != "hfrel" and not name.startswith("hfrel."):
            continue
        for attribute, value in vars(module).items():
            if isinstance(value, (dict, list, set, weakref.WeakKeyDictionary, weakref.WeakValueDictionary)):
                sizes[f"{name}.{attribute}"] = len(value)
    return sizes


def _attach_and_use(images) -> tuple[weakref.ref, weakref.ref]:
    model = tiny.build("vit")
    explainer = hfrel.attach(model)
    explainer.explain(images, method=["transformer_attribution", "lrp"])
    return weakref.ref(model), weakref.ref(explainer)


def test_an_attached_model_never_detached_is_freed_with_its_explainer(images):
    gc.collect()
    before = _global_sizes()
    refs = [_attach_and_use(images) for _ in range(3)]
    gc.collect()
    assert [(model(), explainer()) for model, explainer in refs] == [(None, None)] * 3
    assert _global_sizes() == before  # nothing global grew with the three models


def test_an_explainer_dropped_without_detach_leaves_its_model_as_found(images):
    model = tiny.build("vit")
    before = snapshot(model)
    explainer = hfrel.attach(model)
    explainer.explain(images)
    gone = weakref.ref(explainer)
    del explainer
    gc.collect()
    assert gone() is None
    assert_same(before, snapshot(model))
    with hfrel.attach(model) as again:  # attachable again: no stale registration
        assert again.explain(images).heatmap.shape[0] == len(images)
