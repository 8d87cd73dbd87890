"""Where each image's patch tokens sit, and how token maps become pictures.

Most models give every image of a batch the same patch grid. NaFlex models (Siglip2) take each image
at its own aspect ratio: image b has its own grid of rows_b x cols_b patches, stored row by row as
the first rows_b * cols_b tokens of a sequence padded to the batch's longest. A `TokenLayout` says
which; maps of a NaFlex batch are laid out on one padded grid (top-left aligned, padding exactly 0),
so every step stays batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLayout:
    """The patch grid of one batch: shared by all images, or each image's own (NaFlex)."""

    grid: tuple[int, int]
    """(rows, cols) of the map tensors: the shared grid, or the largest rows and cols of the batch."""
    sizes: torch.Tensor | None = None
    """(B, 2) each image's own (rows, cols); None when every image has `grid`."""

    @property
    def per_image(self) -> bool:
        return self.sizes is not None

    def token_mask(self, tokens: int) -> torch.Tensor | None:
        """(B, tokens) 1.0 for each image's real patch tokens, 0.0 for padding; None without NaFlex."""
        if self.sizes is None:
            return None
        counts = self.sizes.prod(dim=-1, keepdim=True)
        return (torch.arange(tokens, device=self.sizes.device) < counts).float()

    def tokens_to_grid(self, maps: torch.Tensor) -> torch.Tensor:
        """(..., B, P) token maps -> (..., B, rows, cols), token t of image b at (t // cols_b, t % cols_b)."""
        rows, cols = self.grid
        if self.sizes is None:
            return maps.reshape(*maps.shape[:-1], rows, cols)
        index, valid = self._grid_index(maps.shape[-1], maps.device)
        flat = maps.new_zeros(*maps.shape[:-1], rows * cols + 1)  # one spare slot collects the padding
        flat.scatter_(-1, index.expand_as(maps), maps * valid)
        return flat[..., :-1].reshape(*maps.shape[:-1], rows, cols)

    def patches_to_pixels(self, patches: torch.Tensor, patch: int) -> torch.Tensor:
        """(..., B, P, p, p) per-patch pixel maps -> (..., B, rows * p, cols * p) on the padded pixel grid."""
        rows, cols = self.grid
        lead = patches.shape[:-3]  # (..., B)
        on_grid = self.tokens_to_grid(patches.flatten(-2).movedim(-1, 0))  # (p*p, ..., B, rows, cols)
        on_grid = on_grid.reshape(patch, patch, *on_grid.shape[1:])
        n = len(lead)
        order = (*range(2, n + 2), n + 2, 0, n + 3, 1)  # (..., B, rows, py, cols, px)
        return on_grid.permute(order).reshape(*lead, rows * patch, cols * patch)

    def _grid_index(self, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot of each (image, token) in the flattened padded grid (padding: the spare slot), and validity."""
        rows, cols = self.grid
        sizes = self.sizes.to(device)  # type: ignore[union-attr]
        t = torch.arange(tokens, device=device)
        own_cols = sizes[:, 1:]
        valid = t < sizes.prod(dim=-1, keepdim=True)
        index = torch.where(valid, (t // own_cols) * cols + t % own_cols, rows * cols)
        return index, valid

    def heatmap(self, maps: torch.Tensor, scale: int, patch: int) -> torch.Tensor:
        """NaFlex maps (B, T, rows*s, cols*s) -> pictures (B, T, rows*p, cols*p): each image's own map
        upsampled bilinearly to its own pixel size and min-max normalised over it; padding 0.
        `scale` s: 1 for token maps, p for pixel maps; `patch` p: the patch size in pixels."""
        sizes = self.sizes.to(maps.device)  # type: ignore[union-attr]
        rows = _resize_matrix(sizes[:, 0] * scale, sizes[:, 0] * patch, maps.shape[-2], self.grid[0] * patch)
        cols = _resize_matrix(sizes[:, 1] * scale, sizes[:, 1] * patch, maps.shape[-1], self.grid[1] * patch)
        pictures = rows.unsqueeze(1) @ maps.float() @ cols.unsqueeze(1).transpose(-1, -2)
        inside = (rows.sum(-1) > 0).unsqueeze(-1) & (cols.sum(-1) > 0).unsqueeze(-2)  # (B, H, W)
        return _masked_normalise(pictures, inside.unsqueeze(1))


def _resize_matrix(source: torch.Tensor, target: torch.Tensor, source_max: int, target_max: int) -> torch.Tensor:
    """(B, target_max, source_max) matrices of bilinear resizing (align_corners=False, as F.interpolate),
    each from its image's `source` length to its `target` length; rows past `target` are 0."""
    out = torch.arange(target_max, device=source.device, dtype=torch.float64)
    src_len, dst_len = source.double().unsqueeze(-1), target.double().unsqueeze(-1)
    position = ((out + 0.5) * src_len / dst_len - 0.5).clamp(min=0)
    low = position.floor().clamp(max=src_len - 1)
    high = (low + 1).clamp(max=src_len - 1)
    frac = position - low
    matrix = torch.zeros(source.shape[0], target_max, source_max, dtype=torch.float64, device=source.device)
    matrix.scatter_add_(-1, low.long().unsqueeze(-1), (1 - frac).unsqueeze(-1))
    matrix.scatter_add_(-1, high.long().unsqueeze(-1), frac.unsqueeze(-1))
    return (matrix * (out < dst_len).unsqueeze(-1)).float()


def _masked_normalise(maps: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map over its `inside` pixels to [0, 1]; outside and constant maps give 0."""
    flat, mask = maps.flatten(-2), inside.flatten(-2)
    low = flat.masked_fill(~mask, float("inf")).amin(dim=-1, keepdim=True)
    high = flat.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where((span > 0) & mask, (flat - low) / safe, torch.zeros_like(flat))
    return out.view_as(maps)
