"""Are zero-shot maps prompt-specific? Measured on held-out two-object scenes with the bundled tiny CLIP.

    python examples/zero_shot_specificity.py [--scenes 200] [--batch 50]
    python examples/zero_shot_specificity.py --docs docs/results.md          # write the tables into the docs
    python examples/zero_shot_specificity.py --docs docs/results.md --check  # exit 1 if the docs' tables differ

Every scene is scored against the six prompts "a photo of a {shape}"; each method explains the prompts
of both of its objects (one batched call, labels (B, 2): prompt indices). A map of prompt c is
*class-specific* when its mean heat (`Explanation.heatmap`) on c's object is higher than on the other
object; the *pointing game* is won when the map's maximum lies on c's own object; the *noun share* is
the part of the prompt's positive text relevance (`Explanation.text_relevance`) that sits on its noun,
the shape's name: max(0, R_noun) / sum over the prompt's tokens of max(0, R_t). Class-agnostic methods
(rollout, attention) give both prompts the same image map, so they sit at 50% by construction.
Prints markdown tables; the docs' copy sits between the markers BEGIN and END below, so it is always
this script's output.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from specificity import add_scene_arguments, keep_in_docs, top_two_found

import hfrel
from hfrel.datasets import ZERO_SHOT_PROMPTS, load_zero_shot_model, make_scenes
from hfrel.datasets._demo_model import EVALUATION_SEED
from hfrel.datasets._scores import own_and_other_heat, pointing_hits

BEGIN = "<!-- zero-shot tables: written by `python examples/zero_shot_specificity.py --docs docs/results.md` -->"
END = "<!-- end of the zero-shot tables -->"


def noun_share(text_relevance: torch.Tensor, input_ids: torch.Tensor, noun_ids: torch.Tensor) -> torch.Tensor:
    """(B, K) share of each explained prompt's positive token relevance on its noun.

    `text_relevance` (B, K, L); `input_ids` (B, K, L) the explained prompts' tokens; `noun_ids` (B, K).
    """
    positive = text_relevance.float().clamp(min=0)
    on_noun = (positive * (input_ids == noun_ids[..., None])).sum(dim=-1)
    total = positive.sum(dim=-1)
    return torch.where(total > 0, on_noun / total.clamp(min=1e-30), torch.zeros_like(total))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scene_arguments(
        parser,
        docs_help="write the tables between the markers of this markdown file",
        check_help="with --docs: only check, exit 1 if they differ",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    model, processor = load_zero_shot_model()
    prompts = list(ZERO_SHOT_PROMPTS)
    text = processor.tokenizer(prompts, padding=True, return_tensors="pt")
    nouns = torch.tensor(processor.tokenizer.convert_tokens_to_ids([p.split()[-1] for p in prompts]))

    singles = make_scenes(1000, seed=EVALUATION_SEED)
    with torch.no_grad():
        pixels = processor(images=[Image.fromarray(a) for a in singles.uint8()], return_tensors="pt").pixel_values
        predicted = model(pixel_values=pixels, **text).logits_per_image.argmax(-1)
    accuracy = (predicted == singles.labels[:, 0]).float().mean()

    scenes = make_scenes(args.scenes, objects=2, seed=args.seed)
    pixel_values = processor(images=[Image.fromarray(a) for a in scenes.uint8()], return_tensors="pt").pixel_values
    names = hfrel.methods()
    specific = {name: [] for name in names}
    pointing = {name: [] for name in names}
    shares: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    top_two, explained = [], []
    with hfrel.attach(model) as explainer:
        for chunk in torch.arange(len(scenes)).split(args.batch):
            labels, masks = scenes.labels[chunk], scenes.masks[chunk]
            results = explainer.explain(pixel_values=pixel_values[chunk], **text, label=labels, method=names)
            logits = next(iter(results.values())).logits
            top_two.append(top_two_found(logits, labels))
            explained.append(labels)
            for name, exp in results.items():
                own, other = own_and_other_heat(exp.heatmap, masks)
                specific[name].append(own > other)
                pointing[name].append(pointing_hits(exp.heatmap, masks))
                if exp.text_relevance is not None:
                    ids = text["input_ids"][labels]  # (B, K, L): the explained prompts' tokens
                    shares[name].append(noun_share(exp.text_relevance, ids, nouns[labels]))

    print(
        f"zero-shot accuracy on {len(singles)} held-out single-object scenes (seed {EVALUATION_SEED}): "
        f"{accuracy:.1%}; prompts: {', '.join(repr(p) for p in prompts)}"
    )
    print(
        f"{len(scenes)} two-object scenes (seed {args.seed}), {2 * len(scenes)} maps per method; both objects' "
        f"prompts are the model's top two in {torch.cat(top_two).float().mean():.1%} of scenes\n"
    )
    tables = [
        "| method | class-specific | pointing game | text relevance on the noun (mean share) |",
        "| --- | --- | --- | --- |",
    ]
    for name in names:
        rate = torch.cat(specific[name]).float().mean()
        hits = torch.cat(pointing[name]).float().mean()
        share = f"{torch.cat(shares[name]).mean():.1%}" if shares[name] else "n/a"
        tables.append(f"| `{name}` | {rate:.1%} | {hits:.1%} | {share} |")
    by_prompt = [name for name in ("transformer_attribution", "generic_attention") if shares[name]]
    if by_prompt:
        classes = torch.cat(explained).flatten()
        tables += ["", "The noun's share of the text relevance, by prompt (mean over the maps of that prompt):", ""]
        tables.append("| prompt | " + " | ".join(f"`{name}`" for name in by_prompt) + " |")
        tables.append("| --- |" + " --- |" * len(by_prompt))
        for index, prompt in enumerate(prompts):
            cells = [f"{torch.cat(shares[name]).flatten()[classes == index].mean():.1%}" for name in by_prompt]
            tables.append(f"| {prompt} | " + " | ".join(cells) + " |")
    print("\n".join(tables))
    if args.docs is not None:
        keep_in_docs(args.docs, tables, begin=BEGIN, end=END, check=args.check, what="the zero-shot tables")
    print(f"\nwall time {time.perf_counter() - wall:.1f} s, CPU time {time.process_time() - cpu:.1f} s")


if __name__ == "__main__":
    main()
