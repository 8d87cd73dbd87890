"""`hfrel.evaluation.evaluate` on a tiny ViT: the report equals the metrics computed from its parts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import hfrel
from hfrel import InputError, MethodError
from hfrel.evaluation import (
    FolderDataset,
    ImagenetSegmentation,
    evaluate,
    localisation_scores,
    model_view,
    normaliser,
    perturbation_auc,
    perturbation_hits,
    write_report,
)
from hfrel.evaluation._runner import _model_masks
from tests import tiny
from tests.test_evaluation_data import add_item, gtsegs_content, write_gtsegs, write_labels

NAMES = ["circle", "square", "ring", "cross", "star"]


@pytest.fixture
def model():
    vit = tiny.build("vit")
    vit.config.id2label = dict(enumerate(NAMES))
    vit.config.label2id = {name: i for i, name in enumerate(NAMES)}
    return vit


@pytest.fixture
def processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def five_items(root):
    boxes = [(4, 20, 6, 30), (10, 38, 2, 12), (0, 40, 20, 48), (15, 25, 15, 25), (30, 40, 0, 48)]
    for i, box in enumerate(boxes):
        add_item(root, f"s{i}", box=box, seed=i)
    write_labels(root, ["s0,1", "s1,circle", "s2,4", "s3,Star", "s4,2"])
    return FolderDataset(root), [1, 0, 4, 4, 2]


@pytest.mark.parametrize("label", ["dataset", "predicted"])
def test_report_equals_the_metrics_of_its_parts(tmp_path, model, processor, label):
    """The parts are computed in the runner's batches of 2 (2, 1), so every float matches exactly."""
    data, labels = five_items(tmp_path / "data")
    labels = labels[:3]
    methods = ["transformer_attribution", "rollout"]
    report = evaluate(model, processor, data, method=methods, label=label, n=3, batch_size=2, progress=False)

    samples = [data.load(i) for i in range(3)]
    # the paper's mask geometry for a plain resize: nearest-neighbour resampling to the model's size
    masks = torch.stack(
        [torch.tensor(np.array(Image.fromarray(s.mask).resize((32, 32), Image.NEAREST))) for s in samples]
    )
    classify = lambda x: model(pixel_values=x).logits  # noqa: E731
    normalise = normaliser(processor)
    heatmaps: dict[str, list[torch.Tensor]] = {method: [] for method in methods}
    hits: dict[tuple[str, str], list[torch.Tensor]] = {(m, t): [] for m in methods for t in ("positive", "negative")}
    base = []
    for start in range(0, 3, 2):
        batch = slice(start, start + 2)
        pixel_values = processor(images=[s.image for s in samples[batch]], return_tensors="pt")["pixel_values"]
        expected = torch.tensor(labels[batch])
        with hfrel.attach(model) as explainer:
            maps = explainer.explain(pixel_values, label=expected if label == "dataset" else None, method=methods)
        images = model_view(pixel_values, processor)
        with torch.no_grad():
            base.append(classify(normalise(images)).argmax(-1) == expected)
        for (method, test), found in hits.items():
            heat = maps[method].heatmap
            found.append(
                perturbation_hits(
                    classify, images, heat, expected, test=test, normalise=normalise, batch_size=18, unperturbed=False
                )
            )
        for method in methods:
            heatmaps[method].append(maps[method].heatmap)
    accuracy = torch.cat(base).double().mean()

    assert report["n"] == 3 and report["label"] == label and report["skipped"] == []
    assert report["unperturbed_accuracy"] == pytest.approx(100 * float(accuracy))
    for method in methods:
        expected = localisation_scores(torch.cat(heatmaps[method]), masks).summary()
        got = report["methods"][method]
        for key in ("pixel_accuracy", "miou", "map", "pointing_game", "relevance_mass", "rank_accuracy"):
            assert got[key] == pytest.approx(expected[key]), (method, key)
        for test in ("positive", "negative"):
            curve = torch.cat([accuracy.view(1), torch.cat(hits[method, test]).double().mean(0)])
            assert got[f"{test}_perturbation_accuracy"] == pytest.approx((100 * curve).tolist())
            assert got[f"{test}_perturbation_auc"] == pytest.approx(perturbation_auc(curve))


def test_masks_follow_the_processors_resize_and_crop():
    from transformers import DeiTImageProcessor, ViTImageProcessor

    mask = np.zeros((40, 48), dtype=bool)
    mask[3:29, 7:31] = True
    plain = ViTImageProcessor(size={"height": 32, "width": 32})
    expected = np.asarray(Image.fromarray(mask).resize((32, 32), Image.NEAREST))
    assert np.array_equal(_model_masks(plain, [mask], (32, 32))[0].numpy(), expected)
    cropping = DeiTImageProcessor(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32})
    expected = np.asarray(Image.fromarray(mask).resize((36, 36), Image.NEAREST))[2:34, 2:34]
    assert np.array_equal(_model_masks(cropping, [mask], (32, 32))[0].numpy(), expected)


def test_bad_items_are_skipped_and_n_counts_evaluated_items(tmp_path, model, processor):
    root = tmp_path / "data"
    add_item(root, "bad_name")
    add_item(root, "bad_index")
    add_item(root, "good0")
    add_item(root, "good1", seed=1)
    add_item(root, "after_the_limit", mask_size=(3, 3))  # never read: the run stops at n
    write_labels(root, ["bad_name,hexagon", "bad_index,7", "good0,1", "good1,square", "after_the_limit,1"])
    report = evaluate(model, processor, FolderDataset(root), method=["attention"], n=2, progress=False)
    assert report["n"] == 2
    reasons = {s["item"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"bad_name", "bad_index"}
    assert "unknown class name 'hexagon'" in reasons["bad_name"]
    assert "label 7 is out of range" in reasons["bad_index"]


def test_nothing_to_evaluate_is_an_input_error(tmp_path, model, processor):
    root = tmp_path / "data"
    add_item(root, "a", box=None)
    write_labels(root, ["a,1"])
    with pytest.raises(InputError, match=r"no item of .* could be evaluated; skipped a: the mask has no object"):
        evaluate(model, processor, FolderDataset(root), method=["attention"], progress=False)


def test_unlabelled_data_explains_predictions_without_perturbation(tmp_path, model, processor):
    images, masks = gtsegs_content()
    write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    with ImagenetSegmentation(tmp_path / "gtsegs_ijcv.mat") as data:
        with pytest.raises(InputError, match=r"has no class labels.*label='predicted'"):
            evaluate(model, processor, data, method=["rollout"], progress=False)
        report = evaluate(model, processor, data, method=["rollout"], label="predicted", progress=False)
    assert report["n"] == 2 and report["unperturbed_accuracy"] is None
    assert report["methods"]["rollout"]["positive_perturbation_auc"] is None
    assert report["methods"]["rollout"]["negative_perturbation_accuracy"] is None
    assert report["perturbation"].startswith("not run")
    written = write_report(report, tmp_path / "out")
    assert sorted(p.name for p in written) == ["report.html", "report.json", "report.md"]
    assert "| rollout |" in (tmp_path / "out" / "report.md").read_text()


def test_write_report_files(tmp_path, model, processor):
    data, _ = five_items(tmp_path / "data")
    report = evaluate(model, processor, data, method=["attention", "rollout"], n=2, progress=False)
    written = write_report(report, tmp_path / "out")
    assert [p.name for p in written] == ["report.json", "report.md", "perturbation.png", "report.html"]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    table = (tmp_path / "out" / "report.md").read_text()
    assert f"| attention | {report['methods']['attention']['pixel_accuracy']:.2f} |" in table
    assert (tmp_path / "out" / "perturbation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_options_are_checked_and_the_model_is_left_as_found(tmp_path, model, processor):
    data, _ = five_items(tmp_path / "data")
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, processor, data, method=["attention"], n=1, progress=False)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.raises(MethodError, match="unknown method 'gradcam'"):
        evaluate(model, processor, data, method=["gradcam"], progress=False)
    with pytest.raises(MethodError, match=r"start_layer must be an int in \[0, 1\]"):
        evaluate(model, processor, data, start_layer=2, progress=False)
    with pytest.raises(InputError, match="n must be a positive integer"):
        evaluate(model, processor, data, n=0, progress=False)
    with pytest.raises(InputError, match="threshold must be one of"):
        evaluate(model, processor, data, threshold="median", progress=False)  # type: ignore[arg-type]
