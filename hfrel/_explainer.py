"""attach / explain / detach: the lifecycle of hfrel on a user's model.

Attaching registers hooks, routes attention through hfrel's capturing function (or swaps in the
model's own eager attention class where a model has no AttentionInterface), and remembers how to
undo each change. Detaching undoes them in reverse order, so the model is left exactly as found.

One explanation reads straight down: forward (records A_l and what the rules need) -> gradient pass
(grad of the target logits w.r.t. A_l) -> relevance walk -> methods -> heatmaps.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import torch
from torch import nn
from torch.profiler import record_function

from hfrel._capture import ATTENTION_NAME, Recorder, Tape
from hfrel._errors import AttachError, ContextError, InputError, LabelError, UnsupportedModelError
from hfrel._explanation import Explanation, normalise, to_heatmap, upsample
from hfrel._layout import TokenLayout
from hfrel._lrp import Relevance, Start, head_start, hidden_relevance, hidden_start, propagate, widen
from hfrel._methods import METHODS, Evidence, Method
from hfrel._options import check_start_layer, method_names
from hfrel._targets import Target, TargetFn, check_exclusive, class_target, function_target
from hfrel.models import _families  # noqa: F401  (registers the built-in families)
from hfrel.models._image_text import ImageTextSpec, find_image_text_spec, padding_mask
from hfrel.models._spec import FamilySpec, ResolvedModel, find_spec, resolve

# Model -> its attached explainer, weak on both sides: an explainer and its model that nobody
# references any more are freed even if never detached (the explainer's finalizer undoes its changes).
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.ref[Explainer]] = weakref.WeakKeyDictionary()

MethodArg = str | Sequence[str]


@contextlib.contextmanager
def _without_autocast() -> Iterator[None]:
    """Switch off autocast on every device type that has it, for arithmetic that must stay float32."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


def _attached_to(model: nn.Module) -> Explainer | None:
    """The live explainer attached to `model`, if any."""
    entry = _ATTACHED.get(model)
    return None if entry is None else entry()


def _undo_all(steps: list[Callable[[], None]]) -> None:
    """Undo hfrel's changes, last first; every step runs even if others fail, and every failure is reported."""
    errors = []
    while steps:
        step = steps.pop()
        try:
            step()
        except Exception as error:  # keep undoing the rest, report afterwards
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        listed = "; ".join(f"{type(error).__name__}: {error}" for error in errors)
        raise AttachError(f"{len(errors)} steps of undoing hfrel's changes failed: {listed}") from errors[0]


def attach(model: nn.Module, *, family: FamilySpec | None = None) -> Explainer:
    """Prepare `model` for explanations; use as a context manager or call `detach()` when done.

    `family` overrides the spec hfrel would pick from `config.model_type` and the model class.
    """
    return Explainer(model, family=family)


class Explainer:
    """Explains one attached model. Create it with `hfrel.attach(model)`."""

    def __init__(self, model: nn.Module, *, family: FamilySpec | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError(
                f"hfrel.attach expects a transformers image-classification model (a torch.nn.Module), "
                f"got {type(model).__name__}."
            )
        if _attached_to(model) is not None:
            raise AttachError(
                f"this {type(model).__name__} already has an hfrel explainer attached; use that one, or call "
                f"its detach() (or leave its `with` block) before attaching again."
            )
        self._pair: ImageTextSpec | None = find_image_text_spec(model) if family is None else None
        spec = self._pair.image if self._pair is not None else family if family is not None else find_spec(model)
        self._resolved: ResolvedModel = resolve(spec, model)
        self._model = model
        self._recorder = Recorder(self._resolved)
        # the text tower of an image–text model: its own resolved spec and tape
        self._text: ResolvedModel | None = resolve(self._pair.text, model) if self._pair is not None else None
        self._text_recorder = Recorder(self._text) if self._text is not None else None
        self._undo: list[Callable[[], None]] = []
        # One explanation at a time: the tape, the eval-mode switch and the model are shared by all calls.
        self._lock = threading.RLock()
        try:
            self._recorder.install(self._undo)
            if self._text_recorder is not None:
                self._text_recorder.install(self._undo)
            if spec.eager_attention is not None:
                self._swap_in_eager_attention(spec.eager_attention())
            else:
                self._route_attention()
        except BaseException:
            _undo_all(self._undo)
            raise
        _ATTACHED[model] = weakref.ref(self)
        # Dropped without detach(), the explainer still undoes its changes when it is collected.
        self._finalizer = weakref.finalize(self, _undo_all, self._undo)
        self._finalizer.atexit = False

    # lifecycle -------------------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def attached(self) -> bool:
        return _attached_to(self._model) is self

    @property
    def family(self) -> str:
        """The name of the family spec in use, e.g. "vit" (an image–text model: "clip-model", ...)."""
        return self._pair.name if self._pair is not None else self._resolved.spec.name

    @property
    def image_text(self) -> bool:
        """Whether the model is an image–text model (labels are prompt indices, maps come with text_relevance)."""
        return self._pair is not None

    @property
    def prompt_probabilities(self) -> str | None:
        """How an image–text model's prompt logits read as probabilities: "softmax" or "sigmoid"; else None."""
        return self._pair.probabilities if self._pair is not None else None

    @property
    def patch_layout(self) -> str:
        """How images reach the model: "grid" ((B, C, H, W) pixels, one grid for the batch) or "naflex"
        (Siglip2: patches at each image's own aspect ratio, with pixel_attention_mask and spatial_shapes)."""
        return self._resolved.spec.patch_layout

    @property
    def num_layers(self) -> int:
        return len(self._resolved.blocks)

    def detach(self) -> None:
        """Remove every hook and swap; the model is left exactly as it was found. Safe to call twice."""
        with self._lock:
            if not self.attached:
                return
            try:
                self._finalizer()  # runs the undo steps once; the finalizer is then dead
            finally:
                _ATTACHED.pop(self._model, None)

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<hfrel.Explainer {self.family} {type(self._model).__name__} ({state})>"

    def _route_attention(self) -> None:
        """Switch the model to hfrel's capturing attention function; remember every config's own choice."""
        configs: dict[int, tuple[object, object]] = {}
        for module in self._model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_attn_implementation_internal"):
                configs.setdefault(id(config), (config, config._attn_implementation_internal))
                for key in getattr(config, "sub_configs", {}) or {}:
                    sub = getattr(config, key, None)
                    if sub is not None and hasattr(sub, "_attn_implementation_internal"):
                        configs.setdefault(id(sub), (sub, sub._attn_implementation_internal))

        def restore() -> None:
            for config, value in configs.values():
                config._attn_implementation_internal = value

        self._undo.append(restore)
        towers = [self._resolved] + ([self._text] if self._text is not None else [])
        for tower in towers:
            self._attention_owner(tower).set_attn_implementation(ATTENTION_NAME)
        for block in [block for tower in towers for block in tower.blocks]:
            used = getattr(getattr(block.attention, "config", None), "_attn_implementation", None)
            if used != ATTENTION_NAME:
                raise UnsupportedModelError(
                    f"could not route {type(block.attention).__name__} through hfrel's attention function "
                    f"(it uses {used!r}); this model does not follow transformers' AttentionInterface."
                )

    def _attention_owner(self, tower: ResolvedModel) -> nn.Module:
        """The innermost transformers model holding every block of a tower (CLIP: the vision or the text model)."""
        blocks = [block.module for block in tower.blocks]
        owner = self._model
        for module in self._model.modules():
            if hasattr(module, "set_attn_implementation") and module is not owner:
                inside = {id(m) for m in module.modules()}
                if all(id(block) in inside for block in blocks):
                    owner = module
        return owner

    def _swap_in_eager_attention(self, eager: type) -> None:
        """Give each block's attention module the model's own eager class while attached."""
        for block in self._resolved.blocks:
            module = block.attention
            original = type(module)
            if original is eager:
                continue
            if not issubclass(original, eager):
                raise UnsupportedModelError(
                    f"{original.__name__} is not a variant of {eager.__name__}; cannot swap in eager attention."
                )
            module.__class__ = eager
            self._undo.append(lambda module=module, original=original: setattr(module, "__class__", original))

    def _check_attached(self) -> None:
        if not self.attached:
            raise AttachError("this explainer was detached; attach the model again with hfrel.attach(model).")

    # explaining ------------------------------------------------------------------------------

    @overload
    def explain(
        self,
        pixel_values: torch.Tensor,
        label: Any = None,
        *,
        method: str = ...,
        start_layer: int = ...,
        target: TargetFn | None = ...,
        **model_kwargs: Any,
    ) -> Explanation: ...

    @overload
    def explain(
        self,
        pixel_values: torch.Tensor,
        label: Any = None,
        *,
        method: Sequence[str],
        start_layer: int = ...,
        target: TargetFn | None = ...,
        **model_kwargs: Any,
    ) -> dict[str, Explanation]: ...

    def explain(
        self,
        pixel_values: torch.Tensor,
        label: Any = None,
        *,
        method: MethodArg = "transformer_attribution",
        start_layer: int = 0,
        target: TargetFn | None = None,
        **model_kwargs: Any,
    ) -> Explanation | dict[str, Explanation]:
        """Explain a batch: which patches carry the evidence for the target class of each image.

        `label`: None (each image's predicted class), an int or class name (for all images), B of them
        (one per image), or a (B, K) table (K classes per image, sharing one forward pass).
        `method`: a method name, or a list of names (returns a dict; all share one forward pass).
        `start_layer`: first block combined by the rollout-type methods.
        `target`: instead of a label, a function of the model's outputs returning the scores to explain,
        (B,) or (B, K), differentiable (e.g. cosine of `pooler_output` to a query); needed for backbones
        without a head. Exclusive with `label`.
        Extra keyword arguments go to the model's forward, e.g. `interpolate_pos_encoding=True`.
        """
        self._check_attached()
        check_exclusive(label, target)
        if target is None and not self._resolved.heads and self._pair is None:
            raise LabelError(
                f"this {type(self._model).__name__} has no classification head, so there is no class logit to "
                f"explain; pass target=fn, a function of the outputs returning (B,) or (B, K) scores, e.g. "
                f"target=lambda outputs: outputs.pooler_output @ query."
            )
        names = method_names(method)
        chosen = [METHODS[name] for name in names]
        check_start_layer(start_layer, self.num_layers)
        pixel_values, model_kwargs = self._check_inputs(pixel_values, model_kwargs)
        with self._eval_mode():
            results = self._run(pixel_values, label, target, chosen, start_layer, model_kwargs)
        return results[names[0]] if isinstance(method, str) else results

    def attention_maps(self, pixel_values: torch.Tensor, **model_kwargs: Any) -> list[torch.Tensor]:
        """The attention probabilities A_l of every block, (B, H, N, N) each, as the model computes them.

        Windowed blocks (Swin): each window's probabilities placed in the stage's N x N matrix, tokens in
        raster order, zero between tokens of different windows (shift and padding undone).
        """
        self._check_attached()
        pixel_values, model_kwargs = self._check_inputs(pixel_values, model_kwargs)
        with self._eval_mode(), torch.no_grad():
            tape = self._recorder.new_tape(activations=False)
            self._model(pixel_values=pixel_values, **model_kwargs)
            self._check_tape(tape)
            return [
                record.probs.detach() if record.layout is None else record.layout.embed(record.probs.detach())
                for record in tape.layers
            ]

    def _check_inputs(self, pixel_values: object, model_kwargs: dict) -> tuple[torch.Tensor, dict]:
        resolved = self._resolved
        for reserved in ("pixel_values", "labels", "output_attentions", "return_dict"):
            if reserved in model_kwargs:
                raise InputError(f"do not pass {reserved!r} to explain(); hfrel sets it (labels go in `label`).")
        if self._pair is not None:
            self._check_text_inputs(model_kwargs)
        if not isinstance(pixel_values, torch.Tensor):
            raise InputError(
                f"pixel_values must be a torch.Tensor of shape (B, {resolved.num_channels}, H, W), got "
                f"{type(pixel_values).__name__}; use the checkpoint's image processor with return_tensors='pt'."
            )
        if pixel_values.dim() == 3 and resolved.spec.patch_layout == "grid":
            raise InputError(
                f"pixel_values must have shape (B, C, H, W); got one image of shape {tuple(pixel_values.shape)}. "
                f"Add the batch axis with pixel_values.unsqueeze(0)."
            )
        if pixel_values.dim() != 4 and resolved.spec.patch_layout == "grid":
            raise InputError(f"pixel_values must have shape (B, C, H, W); got shape {tuple(pixel_values.shape)}.")
        if resolved.spec.patch_layout == "naflex":
            return self._check_naflex_inputs(pixel_values, dict(model_kwargs))
        batch, channels, height, width = pixel_values.shape
        if batch == 0:
            raise InputError("pixel_values holds no image (batch size 0).")
        if channels != resolved.num_channels:
            raise InputError(
                f"pixel_values has {channels} channels but the model expects {resolved.num_channels}; "
                f"convert images to RGB before the image processor."
            )
        if not pixel_values.is_floating_point():
            raise InputError(
                f"pixel_values must be floating point (normalised by the image processor), got {pixel_values.dtype}."
            )
        bad = (~torch.isfinite(pixel_values)).sum().item()
        if bad:
            raise InputError(f"pixel_values contains {bad} NaN or infinite values; explanations need finite inputs.")
        patch_h, patch_w = resolved.patch_size
        if height < patch_h or width < patch_w:
            raise InputError(f"images of {height}x{width} pixels are smaller than one {patch_h}x{patch_w} patch.")
        if resolved.spec.size_check is not None and (
            problem := resolved.spec.size_check(resolved.config, height, width)
        ):
            raise InputError(problem)
        kwargs = dict(model_kwargs)
        if resolved.interpolation == "always":
            kwargs.pop("interpolate_pos_encoding", None)  # the model interpolates position embeddings itself
        elif (height, width) != resolved.image_size and not kwargs.get("interpolate_pos_encoding"):
            raise InputError(
                f"this model was trained on {resolved.image_size[0]}x{resolved.image_size[1]} images but got "
                f"{height}x{width}; resize with the checkpoint's image processor, or pass "
                f"interpolate_pos_encoding=True to explain at this size."
            )
        return self._to_model(pixel_values), kwargs

    def _to_model(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = self._resolved.patch_embedding.weight
        if weight.device.type != "meta":
            pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        return pixel_values

    def _check_naflex_inputs(self, pixel_values: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
        """NaFlex (Siglip2): patches (B, P, C*p*p), each image's grid in `spatial_shapes`, real patches first."""
        resolved = self._resolved
        values = resolved.num_channels * resolved.patch_size[0] * resolved.patch_size[1]
        processor = "Pass the image processor's pixel_values, pixel_attention_mask and spatial_shapes"
        if pixel_values.dim() != 3 or pixel_values.shape[-1] != values:
            raise InputError(
                f"this NaFlex model takes pixel_values of shape (B, P, {values}) (images cut into patches); got "
                f"shape {tuple(pixel_values.shape)}. {processor}: "
                f"explain(**processor(images=..., return_tensors='pt'))."
            )
        batch, patches, _ = pixel_values.shape
        if batch == 0 or patches == 0:
            raise InputError("pixel_values holds no image (batch size 0) or no patch.")
        if not pixel_values.is_floating_point():
            raise InputError(f"pixel_values must be floating point, got {pixel_values.dtype}.")
        bad = (~torch.isfinite(pixel_values)).sum().item()
        if bad:
            raise InputError(f"pixel_values contains {bad} NaN or infinite values; explanations need finite inputs.")
        shapes = kwargs.get("spatial_shapes")
        if not isinstance(shapes, torch.Tensor) or shapes.shape != (batch, 2) or shapes.is_floating_point():
            got = tuple(shapes.shape) if isinstance(shapes, torch.Tensor) else type(shapes).__name__
            raise InputError(
                f"this NaFlex model needs spatial_shapes, an integer tensor (B, 2) = ({batch}, 2) giving each image's "
                f"patch rows and columns; got {got}. {processor}."
            )
        counts = shapes.prod(dim=-1)
        if (shapes < 1).any() or (counts > patches).any():
            raise InputError(
                f"spatial_shapes must give each image at least one patch and at most the {patches} patches of "
                f"pixel_values; got {shapes.tolist()}."
            )
        real = torch.arange(patches, device=shapes.device) < counts.unsqueeze(-1)
        mask = kwargs.get("pixel_attention_mask")
        if mask is None:
            if not real.all():
                raise InputError(
                    f"spatial_shapes cover fewer than the {patches} patches of pixel_values, so some are padding; "
                    f"pass pixel_attention_mask too ({processor})."
                )
        elif (
            not isinstance(mask, torch.Tensor)
            or mask.shape != (batch, patches)
            or not torch.equal(mask.to(device=real.device, dtype=torch.bool), real)
        ):
            raise InputError(
                "pixel_attention_mask must be (B, P) with each image's spatial_shapes rows x cols real patches first "
                f"and padding after, as the image processor lays them out; {processor}."
            )
        kwargs.pop("interpolate_pos_encoding", None)  # NaFlex models resize position embeddings themselves
        weight = resolved.patch_embedding.weight
        if weight.device.type != "meta":
            for name in ("spatial_shapes", "pixel_attention_mask"):
                if isinstance(kwargs.get(name), torch.Tensor):
                    kwargs[name] = kwargs[name].to(weight.device)
        return self._to_model(pixel_values), kwargs

    def _check_text_inputs(self, model_kwargs: dict) -> None:
        """An image–text model explains prompts: the processor's input_ids (K, L) must come along."""
        input_ids = model_kwargs.get("input_ids")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            got = "nothing" if input_ids is None else f"{type(input_ids).__name__} {getattr(input_ids, 'shape', '')}"
            raise InputError(
                f"{type(self._model).__name__} scores images against prompts: pass the processor's text inputs too, "
                f"e.g. explain(**processor(text=prompts, images=images, return_tensors='pt', padding=True)); "
                f"input_ids must be an integer tensor (K, L), got {got}."
            )
        mask = model_kwargs.get("attention_mask")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != input_ids.shape):
            raise InputError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(getattr(mask, 'shape', ()))}."
            )

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """One call at a time (threads wait their turn: the tape and the modules' modes are shared), in eval
        semantics (no dropout); every module's own mode restored after, also on error."""
        with self._lock:
            self._check_attached()  # detach() may have run while this call waited
            modes = [(m, m.training) for m in self._model.modules()]
            self._model.eval()
            try:
                yield
            finally:
                for module, training in modes:
                    module.training = training
                self._recorder.tape = None
                if self._text_recorder is not None:
                    self._text_recorder.tape = None

    @staticmethod
    def _passes(
        chosen: list[Method], layers: int, start_layer: int, merges: Sequence[int] = ()
    ) -> tuple[list[int], dict[str, tuple[int, bool]]]:
        """The blocks whose attention gradients the methods need, and per rule set how deep the walk goes
        (`merges`: the first blocks after a hierarchical model's patch merges)."""
        last = layers - 1
        grad_layers = sorted(
            {
                layer
                for m in chosen
                for layer in (range(start_layer, last + 1) if m.gradients == "from_start" else [last])
                if m.gradients != "none"
            }
        )
        rule_depths: dict[str, tuple[int, bool]] = {}
        for m in chosen:
            if m.rules is None:
                continue
            depth = start_layer if m.relevance_to == "from_start" else last
            if merges:  # rows reach the first stage through the merges' relevance shares: walk that far
                depth = min(depth, min(merges))
            old_depth, old_pixels = rule_depths.get(m.rules, (last, False))
            rule_depths[m.rules] = (min(depth, old_depth), old_pixels or m.relevance_to == "pixels")
        return grad_layers, rule_depths

    def _run(
        self,
        pixel_values: torch.Tensor,
        label: Any,
        target_fn: TargetFn | None,
        chosen: list[Method],
        start_layer: int,
        model_kwargs: dict,
    ) -> dict[str, Explanation]:
        resolved = self._resolved
        grad_layers, rule_depths = self._passes(chosen, self.num_layers, start_layer, list(resolved.merges))
        probe = resolved.probe is not None
        tape = self._recorder.new_tape(activations=bool(rule_depths))
        hidden_start = target_fn is not None and bool(rule_depths)  # LRP starts from hidden x gradient
        needs_graph = bool(grad_layers) or hidden_start
        if needs_graph and torch.is_inference_mode_enabled():
            raise ContextError("these methods need autograd; call explain() outside torch.inference_mode().")
        inputs = pixel_values.detach()
        with torch.enable_grad() if needs_graph else torch.no_grad(), record_function("hfrel.forward"):
            if needs_graph:
                inputs.requires_grad_(True)
            outputs = self._model(pixel_values=inputs, **model_kwargs)
            self._check_tape(tape)
            tape.layout = self._layout(tape, model_kwargs)
            if target_fn is not None:
                target = function_target(target_fn, outputs, inputs.shape[0])
                logits = getattr(outputs, "logits_per_image", None) if self._pair else getattr(outputs, "logits", None)
                logits = target.scores if logits is None else logits
            elif self._pair is not None:
                logits = outputs.logits_per_image  # labels are prompt indices
                target = class_target(label, logits, None)
            else:
                logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
                target = class_target(label, logits, getattr(self._model.config, "id2label", None))
        if hidden_start and not target.scores.requires_grad:
            raise LabelError("target returned scores that do not depend on the model's outputs (no gradient).")

        with record_function("hfrel.gradients"):
            hidden = None
            if hidden_start:
                hidden = tape.probe.y if probe else tape.pooled_from  # type: ignore[union-attr]
            extra = [tape.probe.probs] if probe and grad_layers else []  # type: ignore[union-attr]
            grads, found = self._gradients(
                tape, target.scores, grad_layers, [*extra, *([hidden] if hidden_start else [])]
            )
        probe_grads = found[0] if extra else None
        start = self._start(tape, target, logits, outputs, found[-1] if hidden_start else None)
        with _without_autocast():  # the rules and methods run in float32 even inside the caller's autocast
            with record_function("hfrel.relevance"):
                relevance: dict[str, Relevance] = {}
                last_pass = len(rule_depths) - 1
                for number, (rules, (depth, pixels)) in enumerate(rule_depths.items()):
                    release = number == last_pass  # the last pass frees each block's activations as it goes
                    relevance[rules] = propagate(resolved, tape, start, rules, depth, pixels, release)  # type: ignore[arg-type]
            evidence = Evidence(
                probs=[record.probs for record in tape.layers],
                grads=grads,
                relevance=relevance,
                readout=self._readout(tape),
                patches=self._patch_columns(tape),
                patch_weights=self._patch_weights(tape),
                start_layer=start_layer,
                targets=target.count,
                layouts=[record.layout for record in tape.layers],
                merges={index: merge.layout for index, merge in tape.merges.items()},
                probe_probs=tape.probe.probs if probe else None,  # type: ignore[union-attr]
                probe_grads=probe_grads,
            )
            text = None
            if self._pair is not None and target_fn is None:
                with record_function("hfrel.text"):
                    text = self._text_side(chosen, outputs, target, model_kwargs)
            logits = logits.detach()
            with record_function("hfrel.maps"):
                return {
                    m.name: self._explanation(
                        m, evidence, tape, pixel_values, logits, target, None if text is None else text[m.name]
                    )
                    for m in chosen
                }

    def _start(
        self, tape: Tape, target: Target, logits: torch.Tensor, outputs: Any, hidden_grad: torch.Tensor | None
    ) -> Start:
        """Where the relevance walk starts: the exact head rule for class or prompt logits, else hidden x gradient."""
        if target.start == "hidden":
            return hidden_start(self._resolved, tape, hidden_grad)  # type: ignore[arg-type]
        if self._pair is not None:
            # logit = s <u, v_k> (+ bias) is linear in the image's normalised embedding u with weights s v_k;
            # the norm passes relevance, so the embedding takes it; then the tower's own head rule
            image = outputs.image_embeds.detach()
            weights = self._logit_scale() * outputs.text_embeds.detach()[target.labels.T.to(image.device)]  # (T, B, E)
            return self._embedding_start(self._resolved, tape, image, weights)
        onehot = torch.zeros(target.count, *logits.shape, dtype=torch.float32, device=logits.device)
        onehot.scatter_(-1, target.labels.T.unsqueeze(-1).to(logits.device), 1.0)
        return head_start(self._resolved, tape, onehot)

    @staticmethod
    def _embedding_start(tower: ResolvedModel, tape: Tape, embedding: torch.Tensor, weights: torch.Tensor) -> Start:
        """A tower's start for a scaled cosine: the linear rule on the normalised embedding (B, E) with the other
        tower's (scaled) embedding as weights (T, B, E), then the tower's head (projection, pooling)."""

        def start(rules: str) -> Any:
            r_embedding = hidden_relevance(embedding.unsqueeze(-2), weights.unsqueeze(-2), rules).squeeze(-2)  # type: ignore[arg-type]
            return head_start(tower, tape, r_embedding)(rules)  # type: ignore[arg-type]

        return start

    def _logit_scale(self) -> torch.Tensor:
        return getattr(self._model, self._pair.logit_scale).detach().exp()  # type: ignore[union-attr]

    def _text_side(
        self, chosen: list[Method], outputs: Any, target: Target, model_kwargs: dict
    ) -> dict[str, torch.Tensor]:
        """Text relevance of each image's explained prompts, (B, T, L); padding and the readout token exactly 0.

        The prompt's logit depends on the text tower only through v_k, and differs per image (through u_b),
        so the text tower runs once more on one row per (target, image): row t*B + b is prompt k_bt, scored
        s <u_b, v> (+ bias) with u_b fixed, which equals logits_per_image[b, k_bt] and has its gradient.
        """
        text, pair, recorder = self._text, self._pair, self._text_recorder
        count, batch = target.count, target.labels.shape[0]
        input_ids = model_kwargs["input_ids"]
        prompts = target.labels.T.reshape(-1).to(input_ids.device)
        images = torch.arange(batch, device=input_ids.device).repeat(count)
        rows = {"input_ids": input_ids[prompts]}
        for key in ("attention_mask", "position_ids"):
            value = model_kwargs.get(key)
            if isinstance(value, torch.Tensor) and value.shape[0] == input_ids.shape[0]:
                rows[key] = value[prompts]
        grad_layers, rule_depths = self._passes(chosen, len(text.blocks), 0)  # type: ignore[union-attr]
        tape = recorder.new_tape(activations=bool(rule_depths))  # type: ignore[union-attr]
        tape.positions = pair.text_readout(rows["input_ids"], text.config).to(input_ids.device)  # type: ignore[union-attr]
        scale = self._logit_scale()
        image = outputs.image_embeds.detach()[images.to(outputs.image_embeds.device)]
        with torch.enable_grad() if grad_layers else torch.no_grad():
            features = self._model.get_text_features(**rows)
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            embedding = torch.nn.functional.normalize(features, dim=-1)
            scores = scale.to(embedding.dtype) * (image.to(embedding.device) * embedding).sum(dim=-1, keepdim=True)
        self._check_tape(tape, text=True)
        grads, _ = self._gradients(tape, scores, grad_layers, [])
        start = self._embedding_start(text, tape, embedding.detach(), (scale * image).unsqueeze(0))  # type: ignore[arg-type]
        last_pass = len(rule_depths) - 1
        relevance = {
            rules: propagate(text, tape, start, rules, depth, pixels, number == last_pass)  # type: ignore[arg-type]
            for number, (rules, (depth, pixels)) in enumerate(rule_depths.items())
        }
        tokens = rows["input_ids"].shape[1]
        readout = torch.zeros(len(prompts), tokens, dtype=torch.float32)
        readout[torch.arange(len(prompts)), tape.positions.cpu()] = 1.0  # type: ignore[union-attr]
        evidence = Evidence(
            probs=[record.probs for record in tape.layers],
            grads=grads,
            relevance=relevance,
            readout=readout,
            patches=slice(0, tokens),
            patch_weights=None,
            start_layer=0,
            targets=1,
        )
        padding = padding_mask(rows["input_ids"], rows.get("attention_mask"), text.config)  # type: ignore[union-attr]
        padding = padding | (readout > 0).to(padding.device)  # the readout's own column, like CLS on the image side
        padding = padding.reshape(count, batch, tokens).transpose(0, 1)
        maps = {}
        for m in chosen:
            raw = m.compute(evidence)[0].reshape(count, batch, tokens).transpose(0, 1)
            maps[m.name] = raw.masked_fill(padding.to(raw.device), 0.0).detach()
        return maps

    def _check_tape(self, tape: Tape, text: bool = False) -> None:
        missing = [i for i, record in enumerate(tape.layers) if record.probs is None]
        if missing or (tape.patch_out is None and not text):
            raise UnsupportedModelError(
                f"the forward pass did not go through hfrel's capture (blocks {missing} recorded no attention); "
                f"the model's attention implementation may have been changed while attached."
            )

    def _gradients(
        self, tape: Tape, scores: torch.Tensor, layers: list[int], extra: list[torch.Tensor]
    ) -> tuple[dict[int, torch.Tensor], list[torch.Tensor]]:
        """grad of each target score (B, T) w.r.t. A_l, (T, B, H, N, N), and w.r.t. `extra` tensors.

        Summing each target's score over the batch gives every image its own gradient. The T targets take one
        backward pass each through the one graph: autograd's batched gradients (`is_grads_batched`) run on the
        legacy vmap, which loops over the targets anyway in the softmax, GELU and layer-norm backward and then
        concatenates the pieces, so a plain loop is faster (DeiT-small shape, batch 8, 4 targets: see
        docs/performance.md).
        """
        inputs = [tape.layers[i].probs for i in layers] + extra
        if not inputs:
            return {}, []
        count = scores.shape[1]
        grads: list[torch.Tensor] = []
        with torch.enable_grad():
            for target in range(count):
                seed = torch.zeros_like(scores)
                seed[:, target] = 1.0
                found = torch.autograd.grad(
                    scores, inputs, seed, retain_graph=target < count - 1, materialize_grads=True
                )
                if count == 1:  # a view, not a copy: no second set of (B, H, N, N) gradients at the peak
                    grads = [widen(g).unsqueeze(0) for g in found]
                    break
                if not grads:  # filled target by target, so one target's gradients are held at a time
                    grads = [torch.empty(count, *g.shape, dtype=widen(g).dtype, device=g.device) for g in found]
                for stacked, g in zip(grads, found, strict=True):
                    stacked[target].copy_(g)
        return dict(zip(layers, grads[: len(layers)], strict=True)), grads[len(layers) :]

    def _layout(self, tape: Tape, model_kwargs: dict) -> TokenLayout:
        """The batch's patch grid: from the patch embedding's output, or NaFlex's `spatial_shapes`."""
        if self._resolved.spec.patch_layout == "naflex":
            sizes = model_kwargs["spatial_shapes"].long()
            return TokenLayout(grid=(int(sizes[:, 0].max()), int(sizes[:, 1].max())), sizes=sizes)
        return TokenLayout(grid=tuple(tape.patch_out.shape[-2:]))  # type: ignore[union-attr, arg-type]

    def _patch_columns(self, tape: Tape) -> slice:
        prefix, layout = self._resolved.prefix_tokens, tape.layout
        tokens = tape.layers[-1].probs.shape[-1]
        return slice(prefix, tokens if layout.per_image else prefix + layout.grid[0] * layout.grid[1])  # type: ignore[union-attr]

    def _patch_weights(self, tape: Tape) -> torch.Tensor | None:
        """(B, P) weight of each patch column in a mean over an image's patches; None: all equal (1/P)."""
        columns = self._patch_columns(tape)
        mask = tape.layout.token_mask(columns.stop - columns.start)  # type: ignore[union-attr]
        return None if mask is None else mask / mask.sum(dim=-1, keepdim=True)

    def _readout(self, tape: Tape) -> torch.Tensor:
        """(B, N) weight of each token row in each image's map: the rows the head reads."""
        resolved = self._resolved
        probs = tape.layers[-1].probs
        windows = tape.layers[-1].layout  # windowed blocks (Swin): the last stage's tokens, not a window's
        if windows is not None:
            batch, tokens = probs.shape[0] // windows.windows, windows.tokens
            columns = slice(resolved.prefix_tokens, tokens)
        else:
            batch, tokens = probs.shape[0], probs.shape[-1]
            columns = self._patch_columns(tape)
        mean = torch.zeros(batch, tokens, dtype=torch.float32)
        weights = self._patch_weights(tape)
        if weights is None:
            mean[:, columns] = 1.0 / (columns.stop - columns.start)
        else:
            mean[:, columns] = weights.cpu()
        if resolved.pooling == "mean":
            return mean
        weights = torch.zeros(batch, tokens, dtype=torch.float32)
        if resolved.pooling == "cls":
            weights[:, 0] = 1.0
        elif resolved.pooling == "cls+dist":
            weights[:, :2] = 0.5
        elif resolved.pooling == "probe":
            pass  # the probe token is the readout; the methods start from its attention row
        else:
            weights = mean / 2
            weights[:, 0] = 0.5
        return weights

    def _explanation(
        self,
        method: Method,
        evidence: Evidence,
        tape: Tape,
        pixel_values: torch.Tensor,
        logits: torch.Tensor,
        target: Target,
        text: torch.Tensor | None = None,
    ) -> Explanation:
        raw = method.compute(evidence)  # (T, B, P) or (T, B, H, W) for pixel methods
        layout: TokenLayout = tape.layout  # type: ignore[assignment]
        pixel_map = raw.dim() == 4
        height, width = pixel_values.shape[-2:]
        if not pixel_map:
            raw = layout.tokens_to_grid(raw)
        elif not layout.per_image:
            raw = raw[..., :height, :width]  # pixels the model padded (Swin) are not the image's
        raw = raw.to(logits.device).transpose(0, 1)  # (B, T, ...)
        sizes = heatmap_sizes = None
        if layout.per_image:  # NaFlex: each image on its own grid, padding 0
            patch = self._resolved.patch_size[0]
            heatmap = layout.heatmap(raw, patch if pixel_map else 1, patch)
            heatmap_sizes = layout.sizes * patch  # type: ignore[operator]
            sizes = heatmap_sizes if pixel_map else layout.sizes
        else:
            patch_h, patch_w = self._resolved.patch_size
            padded = (layout.grid[0] * patch_h, layout.grid[1] * patch_w)
            if not pixel_map and padded[0] >= height and padded[1] >= width and padded != (height, width):
                # the model padded the image to whole patches: upsample the patch grid, then crop to the image
                heatmap = normalise(upsample(raw.float(), padded)[..., :height, :width])
            else:
                heatmap = to_heatmap(raw, (height, width))
        labels = target.labels
        if not target.many:
            raw, heatmap, labels = raw[:, 0], heatmap[:, 0], labels[:, 0]
            text = None if text is None else text[:, 0]
        return Explanation(
            method=method.name,
            relevance=raw.detach(),
            heatmap=heatmap.detach(),
            labels=labels,
            logits=logits,
            start_layer=evidence.start_layer if method.uses_start_layer else None,
            text_relevance=text,
            sizes=sizes,
            heatmap_sizes=heatmap_sizes,
        )
