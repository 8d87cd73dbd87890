"""Watch explanations evolve while a model fine-tunes: hfrel's ExplainCallback in a Trainer run.

    python examples/trainer_callback.py [--out DIR] [--steps N]

Fine-tunes the bundled demo ViT for a few steps on synthetic single-object scenes (CPU, well under
a minute) and writes a panel of the paper's maps for four fixed two-object scenes every 4 steps,
to DIR/hfrel/step-*.png. Offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from hfrel.datasets import load_demo_model, make_scenes
from hfrel.integrations import ExplainCallback


class Scenes(torch.utils.data.Dataset):
    """Single-object scenes as the Trainer wants them: normalised pixels and one label each."""

    def __init__(self, count: int, seed: int, processor: object) -> None:
        scenes = make_scenes(count, objects=1, seed=seed)
        mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        self.pixels = (scenes.images - mean) / std
        self.labels = scenes.labels[:, 0]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("hfrel-out/trainer"))
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    model, processor = load_demo_model(device="cpu")
    watched = make_scenes(4, objects=2, seed=11)  # two objects each: does each class keep its own map?
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    callback = ExplainCallback((watched.images - mean) / std, label=watched.labels, every_n_steps=4)
    training = TrainingArguments(
        output_dir=str(args.out),
        max_steps=args.steps,
        per_device_train_batch_size=16,
        learning_rate=1e-4,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=4,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=Scenes(256, seed=12, processor=processor),
        processing_class=processor,
        callbacks=[callback],
    )
    trainer.train()
    for path in callback.written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
