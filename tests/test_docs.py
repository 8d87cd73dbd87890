"""Every Python snippet in README.md and docs/*.md runs, so the docs cannot drift from the code.

Snippets are run as written, each in a fresh namespace, in a temporary working folder, with these
stated substitutions and nothing else:

- Names a snippet uses but leaves to the reader (`model`, `processor`, `pixel_values`, `images`,
  `checkpoint`, ...) come from `reader_names` below. `checkpoint` is a local folder: a tiny ViT in
  ImageNet's shape (224 px, 16 px patches, 1000 classes; class 281 "tabby cat", 285 "Egyptian
  cat"), saved with its image processor, since tests have no hub.
- The hub id in the README's first example is replaced by that folder (SUBSTITUTIONS).
- Files a snippet opens are made first: `kitchen.jpg`, `photos/desk.png` and `my_data/` (scenes written by
  `hfrel.datasets.export_folder`); the evaluation snippet gets the bundled demo model, whose
  classes those scenes name; the backbone snippet gets a tiny `Dinov2Model` and a query embedding;
  the family snippet a tiny model of its own type `jepa-variant` (tests/test_registration.py; its
  registration is undone after); the image–text snippet a tiny `CLIPModel` with an offline tokenizer's
  processor and three `prompts`.
- A snippet that cannot run as written says so in the docs, on the line before it:
  `<!-- doc-test: not run (fragment) -->`. The only accepted reason is "fragment", and the test
  checks it: the snippet must hold a `...` placeholder for the reader's own code.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel.models import _spec
from tests.pictures import smooth_image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?P<marker><!-- doc-test: not run \((?P<reason>[^)]*)\) -->\n)?"
    r"(?P<indent>[ \t]*)```python\n(?P<code>.*?)^(?P=indent)```",
    re.S | re.M,
)
HUB_ID = '"facebook/deit-small-patch16-224"'
SUBSTITUTIONS = {("README.md", HUB_ID): "checkpoint"}  # (file, text in the doc) -> what runs instead


def _snippets() -> list[tuple[str, int, str | None, str]]:
    found = []
    used = set()
    for path in DOCS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n") + 1
            code = textwrap.dedent(match["code"])
            for (name, old), new in SUBSTITUTIONS.items():
                if name == path.name and old in code:
                    used.add((name, old))
                    code = code.replace(old, new)
            found.append((f"{path.relative_to(ROOT)}:{line}", line, match["reason"], code))
    assert used == set(SUBSTITUTIONS), f"substitutions no snippet needs any more: {set(SUBSTITUTIONS) - used}"
    return found


SNIPPETS = _snippets()


def _tiny_vit(config: dict) -> tf.ViTForImageClassification:
    torch.manual_seed(0)
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return tf.ViTForImageClassification(tf.ViTConfig(**base, **config)).eval()


@pytest.fixture(scope="module")
def reader_names(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("docs")
    names = {i: f"class {i}" for i in range(1000)}
    names.update({281: "tabby cat", 285: "Egyptian cat"})
    model = _tiny_vit(dict(image_size=224, patch_size=16, num_labels=1000, id2label=names))
    model.config.label2id = {name: index for index, name in names.items()}
    checkpoint = root / "checkpoint"
    model.save_pretrained(checkpoint)
    processor = tf.ViTImageProcessor(size={"height": 224, "width": 224})
    processor.save_pretrained(checkpoint)
    images = [Image.fromarray(smooth_image(240, 260, seed)) for seed in range(2)]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    rows = [{"image": image, "label": index} for index, image in enumerate(images)]
    examples = [{"pixel_values": pixel_values[i], "labels": i} for i in range(2)]
    return {
        "checkpoint": str(checkpoint),
        "model": model,
        "processor": processor,
        "images": images,
        "pixel_values": pixel_values,
        "fixed_pixel_values": pixel_values,
        "label": 281,
        "split": rows,
        "train": examples,
        "val": examples,
        "args": tf.TrainingArguments(output_dir=str(root / "trainer"), max_steps=1, report_to=[], use_cpu=True),
    }


def _backbone() -> dict:
    torch.manual_seed(0)
    config = tf.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    return {
        "model": tf.Dinov2Model(config).eval(),
        "pixel_values": torch.randn(2, 3, 32, 32),
        "query_embedding": torch.randn(32),
    }


def _jepa_variant() -> dict:
    from tests.test_registration import _variant

    return {"model": _variant(), "pixel_values": torch.randn(2, 3, 32, 32)}


def _image_text() -> dict:
    from tests import tiny

    return {
        "model": tiny.build("clip-model"),
        "processor": tiny.image_text_processor("clip-model"),
        "prompts": ["a photo of a cat", "a photo of a dog", "a red disk"],
    }


def _demo_data() -> dict:
    from hfrel.datasets import export_folder, load_demo_model, make_scenes

    export_folder(make_scenes(4, seed=0), "my_data")
    model, processor = load_demo_model()
    return {"model": model, "processor": processor}


# Snippets that need other reader names than the common ones, found by a text they hold.
SPECIAL = {
    "query_embedding": _backbone,
    'name="jepa-variant"': _jepa_variant,
    '"my_data"': _demo_data,
    "text_relevance": _image_text,
}


@pytest.mark.parametrize(("where", "line", "reason", "code"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_runs(where, line, reason, code, reader_names, tmp_path, monkeypatch):
    if reason is not None:
        assert reason == "fragment", f"{where}: the only reason a snippet may not run is 'fragment', got {reason!r}"
        assert "..." in code, f"{where} is marked a fragment but holds no `...` placeholder: it should run"
        return
    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_image(300, 400, 7)).save("kitchen.jpg")
    Path("photos").mkdir()
    Image.fromarray(smooth_image(230, 250, 8)).save("photos/desk.png")
    namespace = {"__name__": "__doc_snippet__", **reader_names}
    for key, make in SPECIAL.items():
        if key in code:
            namespace.update(make())
    registry = list(_spec._REGISTRY)
    try:
        exec(compile(code, where, "exec"), namespace)
    finally:
        _spec._REGISTRY[:] = registry
        for value in namespace.values():
            if isinstance(value, hfrel.Explainer):
                value.detach()


def test_snippets_were_found():
    assert len(SNIPPETS) >= 10 and {where.split(":")[0] for where, *_ in SNIPPETS} >= {"README.md", "docs/api.md"}
