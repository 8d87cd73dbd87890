"""Image–text models (CLIP, MetaCLIP 2, SigLIP): prompts as targets, both towers, text relevance."""

from __future__ import annotations

import pytest
import torch

import hfrel
from hfrel._lrp import propagate
from tests import tiny
from tests.state import assert_same, snapshot

MODELS = list(tiny.IMAGE_TEXT)
CLIP_LIKE = ["clip-model", "metaclip2-model"]


def _parity(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (the absolute error where `want` is all zeros)."""
    error = float((got - want).detach().abs().max())
    scale = float(want.detach().abs().max())
    return error / scale if scale > 0 else error


@pytest.mark.parametrize("name", MODELS)
def test_every_method_explains_the_best_prompt_by_default(name, pixels):
    model = tiny.build(name)
    model.train()
    before = snapshot(model)
    prompts = tiny.prompts(name)
    with hfrel.attach(model) as explainer:
        assert explainer.image_text and explainer.family == name
        results = explainer.explain(pixel_values=pixels, **prompts, method=hfrel.methods())
    assert_same(before, snapshot(model))
    with torch.no_grad():
        logits = model.eval()(pixel_values=pixels, **prompts).logits_per_image
    padding = prompts["attention_mask"] == 0
    for method, exp in results.items():
        assert exp.relevance.shape == ((3, 32, 32) if method == "lrp" else (3, 4, 4)), method
        assert torch.isfinite(exp.relevance).all() and exp.relevance.abs().sum() > 0, method
        torch.testing.assert_close(exp.logits, logits, rtol=1e-5, atol=1e-6)
        assert torch.equal(exp.labels, logits.argmax(dim=-1))
        text = exp.text_relevance
        assert text.shape == (3, prompts["input_ids"].shape[1]), method
        assert torch.isfinite(text).all() and text.abs().sum() > 0, method
        assert (text[padding[exp.labels]] == 0).all(), method  # padding tokens exactly 0


@pytest.mark.parametrize("name", MODELS)
def test_prompts_per_image_equal_each_image_and_prompt_alone(name, pixels):
    prompts = tiny.prompts(name)
    labels = torch.tensor([[0, 2], [1, 0], [2, 1]])
    methods = ["transformer_attribution", "generic_attention", "attention_gradcam", "partial_lrp", "lrp"]
    with hfrel.attach(tiny.build(name)) as explainer:
        both = explainer.explain(pixels, labels, method=methods, **prompts)
        for i in range(3):
            for k in range(2):
                alone = explainer.explain(pixels[i : i + 1], int(labels[i, k]), method=methods, **prompts)
                for method in methods:
                    assert _parity(both[method].relevance[i, k], alone[method].relevance[0]) < 1e-4, method
                    text_both, text_alone = both[method].text_relevance[i, k], alone[method].text_relevance[0]
                    assert _parity(text_both, text_alone) < 1e-4, method
    assert both["lrp"].text_relevance.shape == (3, 2, prompts["input_ids"].shape[1])


@pytest.mark.parametrize("name", MODELS)
def test_maps_depend_on_the_prompt(name, pixels):
    prompts = tiny.prompts(name)
    methods = ["transformer_attribution", "generic_attention", "partial_lrp", "lrp"]
    with hfrel.attach(tiny.build(name)) as explainer:
        first = explainer.explain(pixels, 0, method=methods, **prompts)
        second = explainer.explain(pixels, 1, method=methods, **prompts)
    for method in methods:
        assert not torch.allclose(first[method].relevance, second[method].relevance), method


# independent computations --------------------------------------------------------------------------------------


def _notebook_rollout(attentions: tuple[torch.Tensor, ...], row: int, sample: int = 0) -> torch.Tensor:
    """The authors' CLIP notebook: R = I; R += mean_h(clamp(grad * A, 0)) @ R per block; the readout's row."""
    tokens = attentions[0].shape[-1]
    relevance = torch.eye(tokens, dtype=attentions[0].dtype)
    for attention in attentions:
        cam = (attention.grad * attention).detach().clamp(min=0).mean(dim=1)[sample]
        relevance = relevance + cam @ relevance
    return relevance[row]


@pytest.mark.parametrize("name", CLIP_LIKE)
def test_generic_attention_equals_the_notebook_arithmetic_on_both_towers(name, pixels):
    prompts = tiny.prompts(name)
    eager = tiny.build(name, attn_implementation="eager")
    with hfrel.attach(tiny.build(name)) as explainer:
        exp = explainer.explain(pixels, [2, 0, 1], method="generic_attention", **prompts)
    eos = (prompts["input_ids"] == 3).int().argmax(dim=-1)
    for b, k in enumerate([2, 0, 1]):
        out = eager(pixel_values=pixels[b : b + 1], **prompts, output_attentions=True)
        image_attentions = out.vision_model_output.attentions
        text_attentions = out.text_model_output.attentions
        for attention in (*image_attentions, *text_attentions):
            attention.retain_grad()
        out.logits_per_image[0, k].backward()
        image_map = _notebook_rollout(image_attentions, 0)[1:]
        assert _parity(exp.relevance[b].flatten(), image_map) < 1e-4
        text_map = _notebook_rollout(text_attentions, int(eos[k]), sample=k)
        text_map[int(eos[k])] = 0.0  # the readout's own column, and padding, are 0 in hfrel's text map
        text_map[prompts["attention_mask"][k] == 0] = 0.0
        assert _parity(exp.text_relevance[b], text_map) < 1e-4


def test_siglip_attention_is_the_probe_row(pixels):
    """The probe is the last attention layer: `attention` is its head-averaged row, as nn.MultiheadAttention reports."""
    model = tiny.build("siglip-model")
    prompts = tiny.prompts("siglip-model")
    with hfrel.attach(model) as explainer:
        exp = explainer.explain(pixels, method="attention", **prompts)
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
        head = model.vision_model.head
        probe = head.probe.repeat(len(pixels), 1, 1)
        _, averaged = head.attention(probe, hidden, hidden, need_weights=True, average_attn_weights=True)
    assert _parity(exp.relevance.flatten(1), averaged[:, 0]) < 1e-5


# conservation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_cvpr_relevance_is_conserved_on_both_towers(name):
    """float64: the cosine's start carries 1 per target into each tower, through every block; SigLIP's probe keeps
    its query's share, and the hidden states carry the rest."""
    model = tiny.build(name).double()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    prompts = tiny.prompts(name)
    labels = torch.tensor([[0, 2], [1, 1]])
    with hfrel.attach(model) as explainer, explainer._eval_mode(), torch.no_grad():
        tape = explainer._recorder.new_tape(activations=True)
        out = model(pixel_values=pixels, **prompts)
        weights = explainer._logit_scale() * out.text_embeds[labels.T]
        start = explainer._embedding_start(explainer._resolved, tape, out.image_embeds, weights)
        image = propagate(explainer._resolved, tape, start, "cvpr", down_to=0, to_pixels=False)

        text_tape = explainer._text_recorder.new_tape(activations=True)
        text_tape.positions = explainer._pair.text_readout(prompts["input_ids"], explainer._text.config)
        features = model.get_text_features(**prompts).pooler_output
        embedding = torch.nn.functional.normalize(features, dim=-1)
        text_start = explainer._embedding_start(
            explainer._text, text_tape, embedding, explainer._logit_scale() * out.image_embeds[:1].unsqueeze(0)
        )
        text = propagate(explainer._text, text_tape, text_start, "cvpr", down_to=0, to_pixels=False)
    ones = torch.ones(2, 2, dtype=torch.float64)
    kept = ones if image.probe_query is None else ones - image.probe_query
    if image.probe_query is not None:
        assert (image.probe_query.abs() > 1e-6).all()
    for total in image.totals.values():
        torch.testing.assert_close(total, kept, rtol=1e-7, atol=1e-7)
    for total in text.totals.values():
        torch.testing.assert_close(total, torch.ones(1, 3, dtype=torch.float64), rtol=1e-7, atol=1e-7)


# targets and errors ---------------------------------------------------------------------------------------------


def test_a_function_target_on_an_image_text_model_has_no_text_relevance(pixels):
    prompts = tiny.prompts("clip-model")
    with hfrel.attach(tiny.build("clip-model")) as explainer:
        by_target = explainer.explain(
            pixels, method="generic_attention", target=lambda out: out.logits_per_image[:, 1], **prompts
        )
        by_label = explainer.explain(pixels, 1, method="generic_attention", **prompts)
    assert by_target.text_relevance is None
    torch.testing.assert_close(by_target.relevance, by_label.relevance, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_prompts_are_required(name, pixels):
    model = tiny.build(name)
    before = snapshot(model)
    with hfrel.attach(model) as explainer, pytest.raises(hfrel.InputError, match=r"pass the processor's text inputs"):
        explainer.explain(pixels)
    assert_same(before, snapshot(model))


def test_prompt_index_out_of_range(pixels):
    with hfrel.attach(tiny.build("clip-model")) as explainer, pytest.raises(hfrel.LabelError, match="out of range"):
        explainer.explain(pixels, 3, **tiny.prompts("clip-model"))


def test_siglip_generic_attention_equals_the_probe_definition_computed_by_hand():
    """float64, independent of hfrel's capture: the probe's attention recomputed by hand from the module's weights,
    the encoder's from `output_attentions`; row = mean_h(clamp(grad * A_p, 0)), then row += row @ C_l per block."""
    model = tiny.build("siglip-model", attn_implementation="eager").double()
    prompts = tiny.prompts("siglip-model")
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with hfrel.attach(tiny.build("siglip-model").double()) as explainer:
        exp = explainer.explain(pixels, [1, 2], method="generic_attention", **prompts)
    text = torch.nn.functional.normalize(model.get_text_features(**prompts).pooler_output, dim=-1).detach()
    head = model.vision_model.head
    width, heads = head.attention.embed_dim, head.attention.num_heads
    for b, k in enumerate([1, 2]):
        vision = model.vision_model(pixel_values=pixels[b : b + 1], output_attentions=True)
        hidden = vision.last_hidden_state  # after post_layernorm
        weight, bias = head.attention.in_proj_weight, head.attention.in_proj_bias
        q = head.probe @ weight[:width].T + bias[:width]  # (1, 1, D)
        key = hidden @ weight[width : 2 * width].T + bias[width : 2 * width]
        value = hidden @ weight[2 * width :].T + bias[2 * width :]

        def split(x):
            return x.view(1, x.shape[1], heads, -1).transpose(1, 2)

        probe = torch.softmax(split(q) @ split(key).transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)
        probe.retain_grad()
        attended = head.attention.out_proj((probe @ split(value)).transpose(1, 2).reshape(1, 1, width))
        pooled = (attended + head.mlp(head.layernorm(attended)))[:, 0]
        logit = model.logit_scale.exp() * (torch.nn.functional.normalize(pooled, dim=-1) @ text[k]) + model.logit_bias
        for attention in vision.attentions:
            attention.retain_grad()
        logit.sum().backward()
        row = (probe.grad * probe).clamp(min=0).mean(dim=1)[0, 0]  # (N,)
        for attention in reversed(vision.attentions):
            contribution = (attention.grad * attention).clamp(min=0).mean(dim=1)[0]
            row = row + row @ contribution
        assert _parity(exp.relevance[b].flatten(), row) < 1e-6


# Siglip2 (NaFlex image tower) -------------------------------------------------------------------------------------


def test_siglip2_each_image_on_its_own_grid_equals_it_alone():
    """Siglip2Model: images on their own patch grids in one padded batch, the probe attending over real patches only;
    each image's maps (and its prompt's text map) equal the image explained alone without padding; padding is 0."""
    from tests.test_naflex import alone, naflex_batch

    model = tiny.build("siglip2-model")
    model.train()
    before = snapshot(model)
    inputs = naflex_batch([(2, 6), (4, 4), (3, 5)])
    prompts = tiny.prompts("siglip2-model")
    with hfrel.attach(model) as explainer:
        assert explainer.family == "siglip2-model"
        batch = explainer.explain(**inputs, **prompts, label=[0, 2, 1], method=hfrel.methods())
        for i, k in enumerate([0, 2, 1]):
            single = explainer.explain(**alone(inputs, i, padded=False), **prompts, label=k, method=hfrel.methods())
            for method in hfrel.methods():
                got, _ = batch[method].image(i)
                want, _ = single[method].image(0)
                assert _parity(got, want) < 1e-4, method
                assert _parity(batch[method].text_relevance[i], single[method].text_relevance[0]) < 1e-4, method
                rows, cols = batch[method].sizes[i].tolist()
                outside = batch[method].relevance[i].clone()
                outside[:rows, :cols] = 0
                assert (outside == 0).all(), method
    assert_same(before, snapshot(model))


def test_siglip2_attention_is_the_masked_probe_row():
    from tests.test_naflex import naflex_batch

    model = tiny.build("siglip2-model")
    inputs = naflex_batch([(2, 6), (4, 4)])
    prompts = tiny.prompts("siglip2-model")
    with hfrel.attach(model) as explainer:
        exp = explainer.explain(**inputs, **prompts, method="attention")
    with torch.no_grad():
        vision = model.vision_model(
            pixel_values=inputs["pixel_values"],
            pixel_attention_mask=inputs["pixel_attention_mask"],
            spatial_shapes=inputs["spatial_shapes"],
        )
        head = model.vision_model.head
        probe = head.probe.repeat(2, 1, 1)
        padding = inputs["pixel_attention_mask"] == 0
        hidden = vision.last_hidden_state
        _, averaged = head.attention(probe, hidden, hidden, key_padding_mask=padding, average_attn_weights=True)
    for i, (rows, cols) in enumerate(inputs["spatial_shapes"].tolist()):
        got = exp.relevance[i, :rows, :cols].flatten()
        assert _parity(got, averaged[i, 0, : rows * cols]) < 1e-5


def test_siglip2_cvpr_relevance_is_conserved_through_the_masked_probe():
    from tests.test_naflex import naflex_batch

    model = tiny.build("siglip2-model").double()
    inputs = naflex_batch([(2, 6), (3, 5)], dtype=torch.float64)
    prompts = tiny.prompts("siglip2-model")
    labels = torch.tensor([[0, 2], [1, 1]])
    with hfrel.attach(model) as explainer, explainer._eval_mode(), torch.no_grad():
        tape = explainer._recorder.new_tape(activations=True)
        out = model(**inputs, **prompts)
        tape.layout = explainer._layout(tape, inputs)
        weights = explainer._logit_scale() * out.text_embeds[labels.T]
        start = explainer._embedding_start(explainer._resolved, tape, out.image_embeds, weights)
        image = propagate(explainer._resolved, tape, start, "cvpr", down_to=0, to_pixels=False)
    kept = torch.ones(2, 2, dtype=torch.float64) - image.probe_query
    for total in image.totals.values():
        torch.testing.assert_close(total, kept, rtol=1e-7, atol=1e-7)
