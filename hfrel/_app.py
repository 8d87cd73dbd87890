"""`hfrel app`: an explorer in the browser (gradio), in the style of a Hugging Face Spaces demo.

`Explorer` holds one model, attached once, and answers one uploaded image at a time (a lock: the
explainer's hooks record one forward and backward pass at a time). It works without gradio, so the
benchmark and the tests time and check the same code the page runs. `build_app` lays out the page
and its one public endpoint, `/explain`; `serve` starts it, safe by default: bound to 127.0.0.1, no
public share link, uploads size-limited, and a bad upload answered with a message, not a crash.
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

import hfrel
from hfrel import viz
from hfrel._errors import HfrelError, InputError
from hfrel._images import check_naflex_processor, image_inputs, load_image, model_views, naflex_call_options
from hfrel._labels import class_names, label_from_name
from hfrel._options import DEFAULT_METHOD

if TYPE_CHECKING:
    import gradio


COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma", "coolwarm", "gray")
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
TOP_K = 5


@dataclass
class Answer:
    """One explained image: what the page shows and the file it offers."""

    view: Image.Image  # the image as the model saw it (small ones enlarged by whole pixels, for display)
    top: dict[str, float]  # class -> probability, the top-k
    panel: Image.Image | None  # the paper's figure: input + one map per class and method (if drawn)
    overlays: list[tuple[Image.Image, str]]  # each map over the input, with its caption
    maps: Path  # the raw maps, maps.npz
    message: str  # one line on what was explained


def _gradio() -> Any:
    try:
        import gradio
    except ImportError as error:
        raise InputError(
            "hfrel app needs gradio, which hfrel does not install by default: pip install 'hfrel[app]' "
            "(with -c constraints.txt on a CPU machine)."
        ) from error
    return gradio


class Explorer:
    """A classifier and its image processor, attached once, explaining one image per call."""

    def __init__(self, model: torch.nn.Module, processor: Any, *, model_text: str) -> None:
        config = model.config
        self.model = model
        self.model_text = model_text
        self.processor = processor
        self.explainer = hfrel.attach(model)
        try:  # a NaFlex model (Siglip2) with a processor that does not cut patches: refused before the page opens
            check_naflex_processor(processor, self.explainer.patch_layout, model_text)
        except HfrelError:
            self.explainer.detach()
            raise
        self.num_layers = self.explainer.num_layers
        # an image–text model (CLIP, SigLIP, ...) scores prompts, not classes: the page asks for prompts
        self.prompted = bool(getattr(self.explainer, "image_text", False))
        self.num_labels = 0 if self.prompted else int(config.num_labels)
        self.names = {} if self.prompted else class_names(getattr(config, "id2label", None), self.num_labels)
        repeated = {name for name in self.names.values() if list(self.names.values()).count(name) > 1}
        # how a class is shown: its name, with its index when another class has the same name
        self.shown = {i: f"{n} ({i})" if n in repeated else n for i, n in self.names.items()}
        self._lock = threading.Lock()
        self._files = tempfile.TemporaryDirectory(prefix="hfrel-app-")
        self._count = 0

    def close(self) -> None:
        """Detach the model (left exactly as it was found) and delete the files answers pointed to."""
        self.explainer.detach()
        self._files.cleanup()

    def parse_classes(self, text: str | Sequence[str] | None) -> list[int]:
        """Class indices from "name, name, 3" (names case-insensitive, numbers are indices) or a list of
        such strings; empty means the predicted class. Names that hold commas themselves (ImageNet's
        "tabby, tabby cat") are read whole: the longest run of comma-separated parts naming a class wins."""
        values = [text] if isinstance(text, str) or text is None else list(text)
        parts = [part.strip() for value in values for part in str(value or "").split(",")]
        parts = [part for part in parts if part]
        folded = {name.casefold() for name in self.names.values()}
        chosen: list[int] = []
        start = 0
        while start < len(parts):
            end = next(
                (
                    end
                    for end in range(len(parts), start, -1)
                    if ", ".join(parts[start:end]).casefold() in folded or end == start + 1
                ),
            )
            chosen.append(label_from_name(", ".join(parts[start:end]), self.names, self.num_labels))
            start = end
        return list(dict.fromkeys(chosen))

    @staticmethod
    def parse_prompts(text: str | Sequence[str] | None) -> list[str]:
        """Prompts from text, one per line (or a list of them); each kept once, in order."""
        values = [text] if isinstance(text, str) or text is None else list(text)
        prompts = [line.strip() for value in values for line in str(value or "").splitlines()]
        prompts = list(dict.fromkeys(line for line in prompts if line))
        if not prompts:
            raise InputError("no prompt: an image–text model scores an image against prompts; give one per line")
        return prompts

    def _prompt_inputs(self, photo: Image.Image, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The processor's tokens and pixels, prompts padded as the model was trained (SigLIP: full length)."""
        from hfrel.models._image_text import find_image_text_spec

        padding: dict[str, Any] = {"padding": True}
        spec = find_image_text_spec(self.model)
        if spec is not None and spec.text_padding == "max_length":
            length = int(self.model.config.text_config.max_position_embeddings)
            padding = {"padding": "max_length", "max_length": length, "truncation": True}
        options = {**padding, **naflex_call_options(self.processor)}
        return dict(self.processor(text=prompts, images=[photo], return_tensors="pt", **options))

    def explain(
        self,
        path: str | Path | None,
        classes: str | Sequence[str] | None = None,
        methods: str | Sequence[str] | None = (DEFAULT_METHOD,),
        *,
        start_layer: int = 0,
        cmap: str = "jet",
        alpha: float = 0.5,
        panel: bool = True,
    ) -> Answer:
        """Explain the image file at `path` for `classes` (empty: the predicted class) with each method.

        `panel=False` skips drawing the paper's panel (matplotlib; the API does not return it).
        Raises an HfrelError subclass saying what to change for anything it cannot use.
        """
        if path is None or not str(path).strip():
            raise InputError("no image: upload one, or pick an example")
        path = Path(path)
        try:
            photo = load_image(path)
        except InputError as error:  # name the upload as the user knows it, not by its temporary path
            raise InputError(str(error).replace(str(path), f"the upload {path.name!r}")) from None
        prompts = self.parse_prompts(classes) if self.prompted else []
        labels = list(range(len(prompts))) if self.prompted else self.parse_classes(classes)
        chosen = [methods] if isinstance(methods, str) else list(methods or [])
        if not chosen:
            raise hfrel.MethodError(f"choose at least one method; hfrel's methods are: {', '.join(hfrel.methods())}")
        viz._colormap(cmap)
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"opacity must be in [0, 1]; got {alpha}")
        label = torch.tensor([labels]) if labels else None
        if self.prompted:
            inputs = self._prompt_inputs(photo, prompts)
            shown = dict(enumerate(prompts))
        else:
            outputs = self.processor(images=[photo], return_tensors="pt")
            inputs = image_inputs(outputs, self.explainer.patch_layout)  # NaFlex: with its patch mask and grid
            shown = self.shown
        with self._lock:
            results = self.explainer.explain(**inputs, label=label, method=chosen, start_layer=int(start_layer))
            self._count += 1
            number = self._count
        first = results[chosen[0]].cpu()
        logits = first.logits[0].float()
        sigmoid = self.prompted and self.explainer.prompt_probabilities == "sigmoid"
        probabilities = logits.sigmoid() if sigmoid else logits.softmax(dim=-1)  # SigLIP: each prompt on its own
        targets = first.labels.reshape(-1).tolist()
        top = probabilities.topk(min(TOP_K, len(probabilities)))
        image_processor = getattr(self.processor, "image_processor", self.processor)
        seen = model_views(inputs, image_processor)[0]  # NaFlex: at the image's own aspect ratio
        view = (seen.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        arrays: dict[str, np.ndarray] = {
            "labels": np.asarray(targets, dtype=np.int64),
            "logits": logits.numpy(),
            "image": view,
        }
        heat: dict[str, torch.Tensor] = {}
        for method, explanation in results.items():
            relevance, heatmap = explanation.cpu().image(0)  # NaFlex: the image's own grid, no padding
            heat[method] = heatmap.reshape(len(targets), *heatmap.shape[-2:])
            relevance = relevance.reshape(len(targets), *relevance.shape[-2:])
            arrays[f"relevance_{method}"] = relevance.float().numpy()  # (K, gh, gw), as hfrel explain stores it
            arrays[f"heatmap_{method}"] = heat[method].float().numpy()
        overlays, columns, titles = [], [], []
        for k, cls in enumerate(targets):
            for method in chosen:
                picture = viz.overlay(view, heat[method][k], cmap, float(alpha))
                caption = f"{shown[cls]} · {float(probabilities[cls]):.1%} · {method}"
                overlays.append((picture, caption))
                columns.append(heat[method][k])
                titles.append(f"{shown[cls]} ({float(probabilities[cls]):.1%})\n{method}")
        picture = None
        if panel:
            figure = viz.panel(view, columns, titles, input_title=path.name, cmap=cmap, alpha=float(alpha))
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        folder = Path(self._files.name) / f"{number:06d}"
        folder.mkdir()
        maps = folder / f"{_stem(path.name)}-maps.npz"
        np.savez_compressed(maps, **arrays)
        explained = ", ".join(shown[c] for c in targets)
        how = "the predicted class" if not labels else "the chosen class" + "es" * (len(labels) > 1)
        if self.prompted:
            how = "each prompt"
        message = f"Explained {how}: {explained}; with {', '.join(chosen)} (start layer {int(start_layer)})."
        return Answer(
            view=_for_display(Image.fromarray(view)),
            top={shown[int(i)]: float(p) for p, i in zip(top.values, top.indices, strict=True)},
            panel=picture,
            overlays=overlays,
            maps=maps,
            message=message,
        )


def _for_display(picture: Image.Image, size: int = 224) -> Image.Image:
    """Small model inputs (the demo's 64x64) enlarged by whole pixels, so the page shows them sharp."""
    factor = max(1, size // max(picture.size))
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)


def _stem(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "-", Path(name).stem).strip("-")[:60] or "image"


# the page -------------------------------------------------------------------------------------------

_CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
#hfrel-status p { margin: 0; }
#hfrel-status.error, #hfrel-status .error { color: #cf222e; }
"""


def build_app(explorer: Explorer, examples: Sequence[Path] = ()) -> gradio.Blocks:
    """The page: upload or pick an example, choose classes and methods, see the maps; and `/explain`."""
    gr = _gradio()
    methods = hfrel.methods()
    choices = [(f"{name} ({index})", str(index)) for index, name in explorer.names.items()]

    def show(path: str | None, classes: list[str], chosen: list[str], start_layer: int, cmap: str, alpha: float):
        """The page's handler: any problem becomes the status line; the server carries on."""
        if path is None:
            return "Upload an image, or pick an example.", None, None, None, None, None
        try:
            answer = explorer.explain(path, classes, chosen, start_layer=start_layer, cmap=cmap, alpha=alpha)
        except HfrelError as error:
            return f'<span class="error">⚠ {_escape(error)}</span>', None, None, None, None, None
        except Exception as error:  # a bug, not the user's input: still a message, and a traceback in the log
            traceback.print_exc(file=sys.stderr)
            text = f"hfrel failed on this image ({type(error).__name__}: {error})"
            return f'<span class="error">⚠ {_escape(text)}</span>', None, None, None, None, None
        return answer.message, answer.view, answer.top, answer.panel, answer.overlays, str(answer.maps)

    def endpoint(path: str | None, classes: str, chosen: list[str] | str | None):
        """`/explain`: (image file, classes as text, methods) -> (overlays, top-k); errors as gradio errors."""
        try:
            answer = explorer.explain(path, classes, chosen or [DEFAULT_METHOD], panel=False)
        except HfrelError as error:
            raise gr.Error(str(error)) from None
        return answer.overlays, answer.top

    def pick(event: Any) -> str:
        return str(examples[event.index])

    pick.__annotations__["event"] = gr.SelectData  # gradio passes the click by this annotation

    with gr.Blocks(title="hfrel explorer", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        what = "an image–text model" if explorer.prompted else f"{explorer.num_labels} classes"
        asked = "write prompts and choose methods" if explorer.prompted else "choose classes and methods"
        unit = "prompt" if explorer.prompted else "class"
        gr.Markdown(
            f"## hfrel explorer\nModel `{explorer.model_text}` ({what}, {explorer.num_layers} blocks). Upload an "
            f"image, {asked}: one relevance map per {unit} and method (Chefer, Gur & Wolf, CVPR 2021, and its "
            "baselines)."
        )
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                upload = gr.File(
                    label="image",
                    file_count="single",
                    file_types=IMAGE_TYPES,
                    type="filepath",
                    elem_id="hfrel-upload",
                    height=110,
                )
                if examples:
                    gallery = gr.Gallery(
                        value=[str(path) for path in examples],
                        label="examples (click one)",
                        columns=4,
                        rows=1,
                        height=150,
                        allow_preview=False,
                        elem_id="hfrel-examples",
                    )
                    gallery.select(pick, None, upload, api_visibility="private")
                if explorer.prompted:  # an image–text model: every prompt is scored and explained
                    classes = gr.Textbox(
                        lines=3,
                        label="prompts (one per line)",
                        placeholder="a photo of a cat\na photo of a dog",
                        elem_id="hfrel-prompts",
                    )
                else:
                    classes = gr.Dropdown(
                        choices=choices,
                        multiselect=True,
                        label="classes (empty: the predicted class)",
                        elem_id="hfrel-classes",
                    )
                chosen = gr.CheckboxGroup(
                    choices=methods, value=[DEFAULT_METHOD], label="methods", elem_id="hfrel-methods"
                )
                with gr.Row():
                    start_layer = gr.Slider(0, explorer.num_layers - 1, value=0, step=1, label="start layer")
                    cmap = gr.Dropdown(choices=list(COLORMAPS), value="jet", label="colormap")
                    alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="opacity of the map")
                run = gr.Button("Explain", variant="primary", elem_id="hfrel-run")
            with gr.Column(scale=3, min_width=360):
                status = gr.Markdown("Upload an image, or pick an example.", elem_id="hfrel-status")
                with gr.Row(equal_height=True):
                    view = gr.Image(
                        label="as the model sees it", format="png", height=230, elem_id="hfrel-view", scale=1
                    )
                    top = gr.Label(
                        num_top_classes=TOP_K,
                        label="top prompts" if explorer.prompted else "top classes",
                        elem_id="hfrel-top",
                        scale=1,
                    )
                overlays = gr.Gallery(
                    label=f"maps: one per {unit} and method",
                    columns=4,
                    height=250,
                    object_fit="contain",
                    format="png",
                    elem_id="hfrel-maps",
                )
                with gr.Accordion("the paper's panel: the input, then each map", open=True):
                    panel = gr.Image(show_label=False, format="png", elem_id="hfrel-panel")
                maps = gr.File(label="raw maps (.npz)", elem_id="hfrel-npz", height=60)
        inputs = [upload, classes, chosen, start_layer, cmap, alpha]
        outputs = [status, view, top, panel, overlays, maps]
        run.click(show, inputs, outputs, api_visibility="private")
        upload.change(show, inputs, outputs, api_visibility="private")
        with gr.Row(visible=False):  # the API's own inputs and outputs: classes as text, as the issue asks
            api_image = gr.File(type="filepath", file_types=IMAGE_TYPES)
            api_classes = gr.Textbox()
            api_methods = gr.Dropdown(choices=methods, value=[DEFAULT_METHOD], multiselect=True)
            api_overlays = gr.Gallery(format="png")
            api_top = gr.Label(num_top_classes=TOP_K)
            api_button = gr.Button()
        api_button.click(
            endpoint,
            [api_image, api_classes, api_methods],
            [api_overlays, api_top],
            api_name="explain",
            api_description="Explain an image file: classes as text (comma-separated names or indices, empty = "
            "the predicted class; for an image–text model, the prompts, one per line), methods as a list of names. "
            "Returns the overlays and the top classes.",
        )
    return app


def _escape(value: object) -> str:
    from html import escape

    return escape(str(value))


def theme() -> Any:
    """gradio's default look, on the system's fonts: the page fetches nothing from the internet."""
    gr = _gradio()
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def serve(app: gradio.Blocks, *, host: str, port: int, share: bool, max_file_size: str, quiet: bool = False) -> None:
    """Serve until interrupted. Binds `host` only (127.0.0.1 by default); `share` opens gradio's public link."""
    app.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        ssr_mode=False,
        show_error=False,
        quiet=quiet,
        theme=theme(),
        css=_CSS,
        footer_links=["api"],
    )


def example_scenes(folder: Path, count: int = 4) -> list[Path]:
    """The demo's held-out two-object scenes as PNG files in `folder`, for the page's examples."""
    from hfrel.datasets import CLASS_NAMES, make_scenes
    from hfrel.datasets._demo_model import DEMO_SEED

    scenes = make_scenes(count, objects=2, seed=DEMO_SEED)
    paths = []
    for index in range(count):
        pixels = (scenes.images[index].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        names = "-".join(CLASS_NAMES[int(c)] for c in scenes.labels[index])
        path = folder / f"scene_{index}-{names}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
