"""Are the maps class-specific? Measured on held-out two-object scenes with the bundled demo model.

    python examples/class_specificity.py [--scenes 200] [--model DIR]

For every scene, each method explains both objects' classes (one batched call, labels (B, 2)). A map
of class c is *class-specific* when its mean heat (`Explanation.heatmap`) on c's object is higher than
on the other object; the *pointing game* is won when the map's maximum lies on c's own object.
Class-agnostic methods (rollout, attention) give both classes the same map, so exactly one of the
two is "specific" per scene: they sit at 50% by construction. Prints a markdown table.

    python examples/class_specificity.py --docs docs/results.md          # write the table into the docs
    python examples/class_specificity.py --docs docs/results.md --check  # exit 1 if the docs' table differs

The docs' table sits between the markers BEGIN and END below, so it is always this script's output.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from specificity import add_scene_arguments, keep_in_docs, top_two_found

import hfrel
from hfrel.datasets import CLASS_NAMES, SceneDataset, load_demo_model, make_scenes
from hfrel.datasets._scores import own_and_other_heat, pointing_hits

BEGIN = "<!-- class-specificity table: written by `python examples/class_specificity.py --docs docs/results.md` -->"
END = "<!-- end of the class-specificity table -->"


@torch.no_grad()
def describe_misses(
    method: str, model: torch.nn.Module, scenes: SceneDataset, misses: torch.Tensor, processor: object
) -> str:
    """Which class pairs a method misses, and whether the model uses the missed object at all:
    the target logit as is, with its own object painted over, and with the other object painted over
    (painted in the median colour of the scene's background)."""
    scene, target = misses.nonzero(as_tuple=True)
    images, masks = scenes.images[scene], scenes.masks[scene]
    background = torch.stack([img[:, ~m.any(0)].median(dim=1).values for img, m in zip(images, masks, strict=True)])
    labels = scenes.labels[scene, target]

    def target_logit(hidden: torch.Tensor | None) -> torch.Tensor:
        painted = images
        if hidden is not None:
            covered = masks[torch.arange(len(scene)), hidden][:, None]
            painted = torch.where(covered, background[:, :, None, None], images)
        pixels = processor(list(SceneDataset(painted, labels[:, None], masks[:, :1]).uint8()), return_tensors="pt")
        return model(pixels.pixel_values).logits.gather(1, labels[:, None])[:, 0]

    as_is, without_own, without_other = target_logit(None), target_logit(target), target_logit(1 - target)
    pairs = Counter(
        f"{CLASS_NAMES[labels[i]]} (next to a {CLASS_NAMES[scenes.labels[scene[i], 1 - target[i]]]})"
        for i in range(len(scene))
    )
    lines = [f"{method} misses {len(scene)} maps; the map of:"]
    lines += [f"  {name}: {count}" for name, count in pairs.most_common()]
    lines.append("their target logits (min .. max), which say whether the model uses the missed object:")
    for what, values in (("as is", as_is), ("own object painted over", without_own)):
        lines.append(f"  {what:<25} {values.min():6.2f} .. {values.max():.2f}")
    lines.append(f"  {'other object painted over':<25} {without_other.min():6.2f} .. {without_other.max():.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scene_arguments(
        parser,
        docs_help="write the table between the markers of this markdown file",
        check_help="with --docs: only check, exit 1 if it differs",
    )
    parser.add_argument("--model", default=None, help="a model folder (default: the bundled demo model)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    if args.model is None:
        model, processor = load_demo_model()
    else:
        from hfrel._loading import load_classifier

        model, processor = load_classifier(args.model, device="cpu")
    scenes = make_scenes(args.scenes, objects=2, seed=args.seed)
    pixel_values = processor(list(scenes.uint8()), return_tensors="pt").pixel_values
    names = hfrel.methods()
    specific = {name: [] for name in names}
    pointing = {name: [] for name in names}
    own_heat = {name: [] for name in names}
    other_heat = {name: [] for name in names}
    top_two, first_class, target_probability = [], [], []
    with hfrel.attach(model) as explainer:
        for chunk in torch.arange(len(scenes)).split(args.batch):
            labels, masks = scenes.labels[chunk], scenes.masks[chunk]
            results = explainer.explain(pixel_values[chunk], labels, method=names)
            logits = next(iter(results.values())).logits
            top_two.append(top_two_found(logits, labels))
            chances = logits.gather(1, labels)  # the two objects' logits: which one the model ranks first
            first_class.append(chances == chances.amax(dim=1, keepdim=True))
            target_probability.append(logits.softmax(dim=-1).gather(1, labels))
            for name, exp in results.items():
                own, other = own_and_other_heat(exp.heatmap, masks)
                specific[name].append(own > other)
                own_heat[name].append(own)
                other_heat[name].append(other)
                pointing[name].append(pointing_hits(exp.heatmap, masks))

    print(
        f"{len(scenes)} two-object scenes (seed {args.seed}), {2 * len(scenes)} maps per method; "
        f"both objects' classes are the model's top two in {torch.cat(top_two).float().mean():.1%} of scenes\n"
    )
    table = [
        "| method | class-specific | pointing game | mean heat, own object | mean heat, other object |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        rate = torch.cat(specific[name]).float().mean()
        hits = torch.cat(pointing[name]).float().mean()
        own = torch.cat(own_heat[name]).mean()
        other = torch.cat(other_heat[name]).mean()
        table.append(f"| `{name}` | {rate:.1%} | {hits:.1%} | {own:.3f} | {other:.3f} |")
    print("\n".join(table))
    if args.docs is not None:
        keep_in_docs(args.docs, table, begin=BEGIN, end=END, check=args.check, what="the class-specificity table")
    first = torch.cat(first_class)
    print("\nclass-specific, split by the class the model ranks first of the two and the one it ranks second:\n")
    print("| method | first class | second class |")
    print("| --- | --- | --- |")
    for name in names:
        rate = torch.cat(specific[name])
        print(f"| `{name}` | {rate[first].float().mean():.1%} | {rate[~first].float().mean():.1%} |")
    heard = torch.cat(target_probability) >= 0.01
    paper = torch.cat(specific["transformer_attribution"])
    print(
        f"\ntransformer_attribution on the {int(heard.sum())} maps of classes the model gives at least 1%: "
        f"{int(paper[heard].sum())} class-specific; on the {int((~heard).sum())} others: {int(paper[~heard].sum())}"
    )
    for name in ("transformer_attribution", "generic_attention"):
        misses = ~torch.cat(specific[name])
        if misses.any():
            print("\n" + describe_misses(name, model, scenes, misses, processor))
    print(f"\nwall time {time.perf_counter() - wall:.1f} s, CPU time {time.process_time() - cpu:.1f} s")


if __name__ == "__main__":
    main()
