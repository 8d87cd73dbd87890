"""Every error hfrel raises on purpose is an HfrelError with the built-in base that says its kind;
undoing reports every failure; a decoder's own errors mean "bad file", nothing else does.
(FamilySpec's own checks: tests/test_registration.py.)"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageFile

import hfrel
from hfrel._images import load_image
from hfrel.pipeline.inputs import ExampleSource


def test_each_error_has_the_right_base():
    for error in (
        hfrel.UnsupportedModelError,
        hfrel.InputError,
        hfrel.LabelError,
        hfrel.MethodError,
        hfrel.FamilySpecError,
    ):
        assert issubclass(error, hfrel.HfrelError) and issubclass(error, ValueError), error
    for error in (hfrel.AttachError, hfrel.ContextError, hfrel.ProcessFailedError):
        assert issubclass(error, hfrel.HfrelError) and issubclass(error, RuntimeError), error
        assert not issubclass(error, ValueError), error


def test_inference_mode_is_a_context_error(vit, images):
    with (
        hfrel.attach(vit) as explainer,
        torch.inference_mode(),
        pytest.raises(hfrel.ContextError, match=r"outside torch.inference_mode"),
    ):
        explainer.explain(images)


def test_detach_reports_every_failed_undo_step_and_runs_the_others(vit):
    explainer = hfrel.attach(vit)
    ran = []

    def failing(name):
        def step():
            ran.append(name)
            raise RuntimeError(f"{name} failed")

        return step

    explainer._undo[:0] = [failing("first"), failing("second")]  # undone last, after hfrel's own steps
    with pytest.raises(hfrel.AttachError, match=r"2 steps .* RuntimeError: second failed; RuntimeError: first failed"):
        explainer.detach()
    assert ran == ["second", "first"]
    assert not explainer.attached and not vit._forward_hooks and not vit.vit.embeddings._forward_hooks
    with hfrel.attach(vit):  # every other step ran: attachable again
        pass


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_memory_error_while_decoding_is_not_a_bad_file(tmp_path, monkeypatch):
    path = tmp_path / "fine.png"
    png = _png()
    path.write_bytes(png)

    def out_of_memory(self, *args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(Image.Image, "load", out_of_memory)
    monkeypatch.setattr(ImageFile.ImageFile, "load", out_of_memory)
    with pytest.raises(MemoryError):
        load_image(path)
    rows = [{"image": {"bytes": png, "path": None}}]
    with pytest.raises(MemoryError):
        ExampleSource(rows, 0, "image", None).read(5, {})
    rows = [{"image": Image.new("RGB", (8, 8))}]
    with pytest.raises(MemoryError):
        ExampleSource(rows, 0, "image", None).read(5, {})


def test_a_truncated_file_is_still_a_bad_file(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(_png()[:40])
    with pytest.raises(hfrel.InputError, match=r"cut\.png"):
        load_image(path)
    rows = [{"image": {"bytes": _png()[:40], "path": None}}]
    with pytest.raises(hfrel.InputError, match="cannot read as an image"):
        ExampleSource(rows, 0, "image", None).read(5, {})
