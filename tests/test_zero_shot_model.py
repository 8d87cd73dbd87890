"""The bundled zero-shot model: a tiny CLIP and its own tokenizer, loading offline, naming held-out shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from hfrel.datasets import (
    CLASS_NAMES,
    IMAGE_SIZE,
    ZERO_SHOT_PROMPTS,
    demo_model_path,
    load_zero_shot_model,
    make_scenes,
    zero_shot_model_path,
)
from hfrel.datasets._demo_model import EVALUATION_SEED

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_files_and_size():
    path = zero_shot_model_path()
    names = {p.name for p in path.iterdir()}
    assert names >= {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"}
    both = sum(p.stat().st_size for folder in (path, demo_model_path()) for p in folder.iterdir())
    assert both < 5 * 1024 * 1024, f"the two bundled models take {both / 1e6:.2f} MB"
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "clip" and config["vision_config"]["image_size"] == IMAGE_SIZE


def test_tokenizer_reads_every_prompt_word_by_word():
    _, processor = load_zero_shot_model()
    tokenizer = processor.tokenizer
    encoded = tokenizer(list(ZERO_SHOT_PROMPTS), padding=True)
    for prompt, ids, mask in zip(ZERO_SHOT_PROMPTS, encoded["input_ids"], encoded["attention_mask"], strict=True):
        tokens = tokenizer.convert_ids_to_tokens(ids)[: sum(mask)]
        assert tokens == [tokenizer.bos_token, *prompt.split(), tokenizer.eos_token]
        assert tokenizer.unk_token not in tokens
    assert tokenizer("A Photo of a DISK")["input_ids"] == tokenizer("a photo of a disk")["input_ids"]


def test_loads_offline_in_a_fresh_process():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    code = (
        "from hfrel.datasets import load_zero_shot_model, ZERO_SHOT_PROMPTS\n"
        "model, processor = load_zero_shot_model()\n"
        "ids = processor.tokenizer(list(ZERO_SHOT_PROMPTS))['input_ids']\n"
        "print(type(model).__name__, type(processor).__name__, len(ids))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["CLIPModel", "CLIPProcessor", "6"]


def test_zero_shot_names_held_out_shapes():
    model, processor = load_zero_shot_model()
    assert not model.training
    scenes = make_scenes(200, seed=EVALUATION_SEED)  # held out: the model was trained on TRAINING_SEED
    images = [Image.fromarray(a) for a in scenes.uint8()]
    inputs = processor(text=list(ZERO_SHOT_PROMPTS), images=images, return_tensors="pt", padding=True)
    assert torch.allclose(inputs["pixel_values"], (scenes.images - 0.5) / 0.5, atol=1e-6)  # what training fed it
    with torch.no_grad():
        predicted = model(**inputs).logits_per_image.argmax(-1)
    accuracy = (predicted == scenes.labels[:, 0]).float().mean().item()
    assert accuracy >= 0.95, f"zero-shot accuracy {accuracy:.0%} over {CLASS_NAMES}"
