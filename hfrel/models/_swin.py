"""Swin geometry: the maps between a stage's raster token order and its windows, and across patch merges.

Everything here is index arithmetic on one stage's (height, width) grid; nothing reads weights. The walk
and the methods only call `to_windows` / `to_tokens` / `row_product` (a block's window <-> stage map)
and `split` / `carry` (a merge from stage s+1 down to stage s), so the plain ViT is the case with no
layout at all (one window holding every token, no merge).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

# Position of each of the four source tokens in a merged token's features, as transformers concatenates
# them (Swin and SwinV2 alike): (row offset, column offset) of chunk 0..3.
MERGE_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))


def _gather_tokens(t: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    """`t` indexed along `axis` by `index`, where index -1 picks a zero (padding)."""
    zero_shape = list(t.shape)
    zero_shape[axis] = 1
    padded = torch.cat([t, t.new_zeros(zero_shape)], dim=axis)
    index = index.to(t.device)
    return padded.index_select(axis, torch.where(index < 0, t.shape[axis], index))


@dataclass(frozen=True)
class WindowLayout:
    """One block's windowed attention on a (height, width) token grid: pad to whole windows, roll by
    -shift, cut into window x window windows (row-major windows, row-major tokens inside each)."""

    height: int
    width: int
    window: int
    shift: int

    @property
    def tokens(self) -> int:
        """Tokens of the stage (real ones, raster order)."""
        return self.height * self.width

    @property
    def padded(self) -> tuple[int, int]:
        return (-(-self.height // self.window) * self.window, -(-self.width // self.window) * self.window)

    @property
    def windows(self) -> int:
        height, width = self.padded
        return (height // self.window) * (width // self.window)

    @property
    def area(self) -> int:
        return self.window * self.window

    def token_of_slot(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(windows * area,) raster index of the token in each window slot; -1 for padding."""
        return _window_index(self.height, self.width, self.window, self.shift)[0].to(device)

    def slot_of_token(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(tokens,) the window slot each real token sits in."""
        return _window_index(self.height, self.width, self.window, self.shift)[1].to(device)

    def to_windows(self, t: torch.Tensor) -> torch.Tensor:
        """(..., B, N, D) in raster order -> (..., B*windows, area, D), zeros on padding."""
        slots = _gather_tokens(t, self.token_of_slot(), axis=-2)
        return slots.reshape(*t.shape[:-3], t.shape[-3] * self.windows, self.area, t.shape[-1])

    def to_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """(..., B*windows, area, D) -> (..., B, N, D) in raster order; padding slots are dropped."""
        batch = t.shape[-3] // self.windows
        flat = t.reshape(*t.shape[:-3], batch, self.windows * self.area, t.shape[-1])
        return flat.index_select(-2, self.slot_of_token(t.device))

    def row_product(self, row: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """`row @ M` where M (N x N, raster order) embeds the per-window `matrix` (..., B*windows, area, area):
        zero between tokens of different windows and on padding. Block-sparse: never builds N x N."""
        in_windows = self.to_windows(row.unsqueeze(-1)).squeeze(-1)  # (..., B*windows, area)
        out = (in_windows.unsqueeze(-2) @ matrix.to(in_windows.dtype)).squeeze(-2)
        return self.to_tokens(out.unsqueeze(-1)).squeeze(-1)

    def real_columns(self, matrix: torch.Tensor) -> torch.Tensor:
        """Per-window `matrix` (..., B*windows, area, area) with the columns of padding slots set to 0."""
        real = (self.token_of_slot(matrix.device) >= 0).view(self.windows, 1, self.area).to(matrix.dtype)
        shape = matrix.shape
        return (matrix.reshape(*shape[:-3], -1, self.windows, *shape[-2:]) * real).reshape(shape)

    def real_slots(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(windows, area) True where a slot holds a real token."""
        return (self.token_of_slot(device) >= 0).view(self.windows, self.area)

    def embed(self, probs: torch.Tensor) -> torch.Tensor:
        """Window attention (B*windows, H, area, area) -> (B, H, N, N) in raster order (dense; for inspection)."""
        heads = probs.shape[1]
        batch = probs.shape[0] // self.windows
        n = self.tokens
        slots = self.token_of_slot(probs.device).view(self.windows, self.area)
        rows = slots[:, :, None].expand(-1, -1, self.area)
        cols = slots[:, None, :].expand(-1, self.area, -1)
        valid = (rows >= 0) & (cols >= 0)
        target = (rows * n + cols)[valid]
        source = probs.reshape(batch, self.windows, heads, self.area, self.area).permute(0, 2, 1, 3, 4)
        out = probs.new_zeros(batch, heads, n * n)
        out[..., target] = source[..., valid]
        return out.view(batch, heads, n, n)


@functools.lru_cache(maxsize=64)
def _window_index(height: int, width: int, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    padded_h = -(-height // window) * window
    padded_w = -(-width // window) * window
    per_row = padded_w // window
    slot = torch.arange((padded_h // window) * per_row * window * window)
    which, inside = slot // (window * window), slot % (window * window)
    # position in the rolled, padded grid; torch.roll(x, -shift)[i] = x[(i + shift) mod n]
    row = (which // per_row) * window + inside // window
    col = (which % per_row) * window + inside % window
    row, col = (row + shift) % padded_h, (col + shift) % padded_w
    token = torch.where((row < height) & (col < width), row * width + col, torch.full_like(row, -1))
    slot_of_token = torch.empty(height * width, dtype=torch.long)
    real = token >= 0
    slot_of_token[token[real]] = slot[real]
    return token, slot_of_token


@dataclass(frozen=True)
class MergeLayout:
    """A patch merge from a (height, width) grid (stage s) to ceil(h/2) x ceil(w/2) (stage s+1): merged
    token j's features are the concatenation of its 2x2 sources in MERGE_ORDER (zeros on padding)."""

    height: int
    width: int

    @property
    def merged(self) -> tuple[int, int]:
        return (self.height + 1) // 2, (self.width + 1) // 2

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def parent(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(tokens,) the merged token each stage-s token goes into."""
        return _merge_index(self.height, self.width)[1].to(device) // 4

    def slot_of_token(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(tokens,) index into the merged tokens' (N_{s+1} * 4) chunks."""
        return _merge_index(self.height, self.width)[1].to(device)

    def split(self, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance of the concatenated features (..., B, N_{s+1}, 4D) -> its sources (..., B, N_s, D)."""
        chunks = relevance.reshape(*relevance.shape[:-2], relevance.shape[-2] * 4, relevance.shape[-1] // 4)
        return chunks.index_select(-2, self.slot_of_token(relevance.device))

    def equal_shares(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(tokens,) 1 / (number of real sources of the token's merged token): 1/4 away from padding."""
        parent = self.parent(device)
        count = torch.bincount(parent, minlength=self.merged[0] * self.merged[1]).to(torch.float32)
        return 1.0 / count[parent]

    def relevance_shares(self, per_token: torch.Tensor) -> torch.Tensor:
        """(..., B, N_s) each source's relevance over the sum of its merged token's real sources (sdiv)."""
        from hfrel._lrp import sdiv

        parent = self.parent(per_token.device)
        totals = per_token.new_zeros(*per_token.shape[:-1], self.merged[0] * self.merged[1])
        totals.index_add_(-1, parent, per_token)
        return sdiv(per_token, totals.index_select(-1, parent))

    def carry(self, row: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
        """A row over stage s+1 tokens (..., B, N_{s+1}) -> over stage s tokens: each merged token's entry
        passes to its sources in the given shares ((N_s,) or (..., B, N_s))."""
        return row.index_select(-1, self.parent(row.device)) * shares.to(row.device, row.dtype)


@functools.lru_cache(maxsize=64)
def _merge_index(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    merged_w = (width + 1) // 2
    row = torch.arange(height).repeat_interleave(width)
    col = torch.arange(width).repeat(height)
    order = {offset: k for k, offset in enumerate(MERGE_ORDER)}
    chunk = torch.tensor([[order[(0, 0)], order[(0, 1)]], [order[(1, 0)], order[(1, 1)]]])[row % 2, col % 2]
    merged = (row // 2) * merged_w + col // 2
    slot = merged * 4 + chunk
    return merged, slot


def swin_size_problem(config: object, height: int, width: int) -> str | None:
    """Why transformers' Swin (v1) cannot take this image size, or None.

    A Swin block shrinks its window to a stage grid smaller than the window, and then its relative
    position bias no longer fits: the forward fails, and the block keeps the shrunken window for every
    later call. Refused before the model runs, so the model is left as found.
    """
    patch_h, patch_w = (config.patch_size,) * 2 if isinstance(config.patch_size, int) else config.patch_size
    window = int(config.window_size)
    rows, cols = -(-height // patch_h), -(-width // patch_w)
    for stage in range(len(config.depths)):
        if min(rows, cols) < window:
            return (
                f"this Swin cannot take {height}x{width} images: stage {stage}'s token grid would be {rows}x{cols}, "
                f"smaller than its {window}x{window} windows (transformers' Swin fails there, and keeps shrunken "
                f"windows afterwards). Use images whose every stage grid is at least {window} tokens a side, "
                f"e.g. the checkpoint's {config.image_size} px (its image processor resizes to it)."
            )
        rows, cols = (rows + 1) // 2, (cols + 1) // 2
    return None


def swin_windows(block: nn.Module, grid: tuple[int, int]) -> WindowLayout:
    """The layout a Swin / SwinV2 block used on this forward (its window and shift as it ran them)."""
    return WindowLayout(int(grid[0]), int(grid[1]), int(block.window_size), int(block.shift_size))
