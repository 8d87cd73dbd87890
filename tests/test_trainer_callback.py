"""ExplainCallback writes panels during Trainer runs and changes nothing about training."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from PIL import Image

import hfrel
from hfrel.integrations import ExplainCallback
from tests import tiny


def _train(tmp_path, callbacks, report_to="none", steps=6):
    torch.manual_seed(0)
    config = tf.ViTConfig(**{**tiny.COMMON, "hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.2})
    model = tf.ViTForImageClassification(config)
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        seed=0,
        data_seed=0,
        use_cpu=True,
        report_to=report_to,
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="steps" if report_to != "none" else "no",
        eval_steps=3,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    train, evaluation = tiny.RandomImages(24), tiny.RandomImages(8)
    trainer = tf.Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation, callbacks=callbacks)
    trainer.train()
    return model


def test_training_is_bit_identical_with_the_callback(tmp_path):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    callback = ExplainCallback(pixels, every_n_steps=2)
    with_callback = _train(tmp_path / "with", [callback])
    without = _train(tmp_path / "without", [])
    state, reference = with_callback.state_dict(), without.state_dict()
    assert state.keys() == reference.keys()
    for name, value in state.items():
        assert torch.equal(value, reference[name]), name
    assert [p.name for p in callback.written] == ["step-000002.png", "step-000004.png", "step-000006.png"]
    for path in callback.written:
        assert path.parent == tmp_path / "with" / "hfrel"
        with Image.open(path) as image:
            assert image.width > 100 and image.height > 100
    assert with_callback.training  # train mode as the Trainer left it
    assert all(p.grad is None for p in with_callback.parameters())
    assert with_callback.config._attn_implementation == without.config._attn_implementation


def test_evaluation_panels_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    callback = ExplainCallback(pixels, label=[1, 2], on_evaluate=True, method="rollout")
    _train(tmp_path, [callback], report_to="tensorboard", steps=3)
    assert [p.name for p in callback.written] == ["eval-step-000003.png"]
    accumulator = EventAccumulator(str(tmp_path / "runs" / "hfrel"), size_guidance={"images": 0})
    accumulator.Reload()
    assert accumulator.Tags()["images"] == ["hfrel/rollout"]
    assert [event.step for event in accumulator.Images("hfrel/rollout")] == [3]


def test_bad_arguments_are_refused():
    pixels = torch.zeros(1, 3, 32, 32)
    with pytest.raises(hfrel.InputError, match="would never run"):
        ExplainCallback(pixels)
    with pytest.raises(hfrel.InputError, match="positive int"):
        ExplainCallback(pixels, every_n_steps=0)
    with pytest.raises(hfrel.InputError, match=r"\(B, C, H, W\)"):
        ExplainCallback(pixels[0, 0], every_n_steps=1)
    with pytest.raises(hfrel.InputError, match=r"pixel_values\[None\]"):  # one image without its batch axis
        ExplainCallback(pixels[0], every_n_steps=1)
    with pytest.raises(hfrel.InputError, match="NaFlex"):  # (B, P, F) patches of a Siglip2 processor
        ExplainCallback(torch.zeros(1, 16, 192), every_n_steps=1)
    with pytest.raises(hfrel.MethodError, match="unknown method"):
        ExplainCallback(pixels, every_n_steps=1, method="nope")
