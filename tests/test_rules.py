"""Each LRP rule against a slow, plain reference written from the spec's definitions, in float64."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from hfrel._lrp import bounded_conv_rule, bounded_linear_rule, fork_rule, linear_rule, matmul_rule, residual_rule, sdiv

GEN = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


def grad_times_input(fn, inputs, relevance):
    """R_x = x * d(Z . sdiv(R, Z))/dx with Z = fn(*inputs): the spec's gradient-times-input form."""
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    z = fn(*inputs)
    s = sdiv(relevance, z.detach())
    grads = torch.autograd.grad((z * s).sum(), inputs)
    return [t.detach() * g for t, g in zip(inputs, grads, strict=True)]


def test_sdiv_edge_cases():
    a = torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    b = torch.tensor([0.0, -1e-9, 2.0, -3.0], dtype=torch.float64)
    out = sdiv(a, b)
    assert out[0] == 0  # b == 0
    assert out[1] == pytest.approx(1.0 / 1e-9)  # b + 1e-9 == 0: divide by 1e-9
    assert out[2] == pytest.approx(2.0 / (2.0 + 1e-9))
    assert out[3] == pytest.approx(3.0 / (-3.0 + 1e-9))
    # the same in float32, where 1e-9 rounds to the float32 nearest it
    eps32 = torch.tensor(1e-9, dtype=torch.float32)
    out32 = sdiv(torch.ones(3), torch.stack([torch.tensor(0.0), -eps32, torch.tensor(2.0)]))
    assert out32[0] == 0 and out32[1] == pytest.approx(1.0 / 1e-9, rel=1e-6) and torch.isfinite(out32).all()


def slow_linear(x, w, r, rules):
    """Loops over samples, outputs and inputs: the table in the spec, literally."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for j in range(w.shape[0]):
            zp = sum(x[b, i].clamp(min=0) * w[j, i].clamp(min=0) for i in range(x.shape[1]))
            zn = sum(x[b, i].clamp(max=0) * w[j, i].clamp(max=0) for i in range(x.shape[1]))
            for i in range(x.shape[1]):
                cp = x[b, i].clamp(min=0) * w[j, i].clamp(min=0)
                cn = x[b, i].clamp(max=0) * w[j, i].clamp(max=0)
                if rules == "cvpr":
                    out[b, i] += (cp + cn) * sdiv(r[b, j], zp + zn)
                else:
                    out[b, i] += cp * sdiv(r[b, j], zp) + cn * sdiv(r[b, j], zn)
    return out


@pytest.mark.parametrize("rules", ["cvpr", "classic"])
def test_linear_rule_matches_loops(rules):
    x, w, r = rand(3, 5), rand(4, 5), rand(3, 4)
    torch.testing.assert_close(linear_rule(x, w, r, rules), slow_linear(x, w, r, rules))


def test_linear_rule_with_forward_product_matches_loops():
    # the forward's x @ W.T replaces one of the two denominator products; the answer must not move
    x, w, r = rand(3, 5), rand(4, 5), rand(3, 4)
    torch.testing.assert_close(linear_rule(x, w, r, "cvpr", x @ w.T), slow_linear(x, w, r, "cvpr"))
    # a product in another precision than the arithmetic's is not used (the exact path runs)
    wrong = (x @ w.T).float() + 1.0
    torch.testing.assert_close(linear_rule(x, w, r, "cvpr", wrong), slow_linear(x, w, r, "cvpr"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rules", ["cvpr", "classic", "cvpr+product"])
def test_linear_rule_zero_denominators_give_sdivs_zeros(rules, dtype):
    # output 0: all terms 0 although x W != 0 (signs opposed); output 1: a zero weight row; input 2 is
    # 0; output 2: x- W- == 0 (classic's negative part). sdiv gives 0 there, and so must the rule,
    # which divides without masking (every such s_j meets a zero on the way back)
    x = torch.tensor([[1.0, -1.0, 0.0, 2.0]], dtype=dtype)
    w = torch.tensor([[-1.0, 1.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0], [0.5, 1.0, -4.0, 1.5]], dtype=dtype)
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=dtype)
    product = x @ w.T if rules == "cvpr+product" else None
    got = linear_rule(x, w, r, rules.split("+")[0], product)
    expected = slow_linear(x.double(), w.double(), r.double(), rules.split("+")[0])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected)


def test_linear_rule_cvpr_conserves_and_classic_counts_both_parts():
    x, w, r = rand(2, 6, 8), rand(5, 8), rand(2, 6, 5)
    torch.testing.assert_close(linear_rule(x, w, r, "cvpr").sum(), r.sum())
    # classic: the positive and the negative part each conserve R where their own denominator is non-zero
    z_pos = x.clamp(min=0) @ w.clamp(min=0).T
    z_neg = x.clamp(max=0) @ w.clamp(max=0).T
    expected = (r * (z_pos != 0)).sum() + (r * (z_neg != 0)).sum()
    torch.testing.assert_close(linear_rule(x, w, r, "classic").sum(), expected)


def test_linear_rule_broadcasts_target_axis():
    x, w, r = rand(2, 6, 8), rand(5, 8), rand(3, 2, 6, 5)
    together = linear_rule(x, w, r, "cvpr")
    for t in range(3):
        torch.testing.assert_close(together[t], linear_rule(x, w, r[t], "cvpr"))


def test_residual_rule():
    a, b, r = rand(2, 4, 3), rand(2, 4, 3), rand(2, 4, 3)
    z_a, z_b = grad_times_input(torch.add, [a, b], r)
    plain_a, plain_b = residual_rule(a, b, r, "classic")
    torch.testing.assert_close(plain_a, z_a)
    torch.testing.assert_close(plain_b, z_b)
    ra, rb = residual_rule(a, b, r, "cvpr")
    for i in range(2):  # rescaled per sample: shares |sum R_a| : |sum R_b| of the sample's total
        total = r[i].sum()
        sa, sb = z_a[i].sum(), z_b[i].sum()
        torch.testing.assert_close(ra[i], z_a[i] * (sa.abs() / (sa.abs() + sb.abs()) * total / sa))
        torch.testing.assert_close(rb[i], z_b[i] * (sb.abs() / (sa.abs() + sb.abs()) * total / sb))
        torch.testing.assert_close(ra[i].sum() + rb[i].sum(), total)


def test_fork_rule():
    x, r1, r2 = rand(2, 3), rand(2, 3), rand(2, 3)
    torch.testing.assert_close(fork_rule(x, r1, r2), r1 + r2)  # x * (r1/x + r2/x), up to the 1e-9
    x[0, 0] = 0.0
    x[1, 1] = -1e-9  # x + 1e-9 == 0: sdiv divides by 1e-9 instead
    out = fork_rule(x, r1, r2)
    assert out[0, 0] == 0
    torch.testing.assert_close(out[1, 1], -(r1[1, 1] + r2[1, 1]))
    torch.testing.assert_close(out, x * (sdiv(r1, x) + sdiv(r2, x)))  # the spec's form, literally


def test_matmul_rule_is_halved_gradient_times_input():
    a, v, r = rand(2, 3, 4, 4), rand(2, 3, 4, 5), rand(2, 3, 4, 5)
    ref_a, ref_v = grad_times_input(torch.matmul, [a, v], r)
    got_a, got_v = matmul_rule(a, v, a @ v, r)
    torch.testing.assert_close(got_a, ref_a / 2)
    torch.testing.assert_close(got_v, ref_v / 2)
    torch.testing.assert_close(got_a.sum() + got_v.sum(), r.sum())


def test_bounded_conv_rule_matches_its_definition():
    x, w, r = rand(2, 3, 8, 8), rand(6, 3, 4, 4), rand(2, 6, 2, 2)
    got = bounded_conv_rule(x, w, r, (4, 4), (0, 0))
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    inputs = [t.requires_grad_(True) for t in (x.clone(), low, high)]

    def z_fn(xx, ll, hh):
        return F.conv2d(xx, w, stride=4) - F.conv2d(ll, wp, stride=4) - F.conv2d(hh, wn, stride=4) + 1e-9

    z = z_fn(*inputs)
    grads = torch.autograd.grad((z * (r / z.detach())).sum(), inputs)
    expected = inputs[0].detach() * grads[0] + low * grads[1] + high * grads[2]  # signs carried by z_fn
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(), r.sum(), rtol=1e-6, atol=1e-6)


def test_bounded_linear_rule_on_patches_is_the_conv_rule_on_the_image():
    """NaFlex's linear patch embedding over (py, px, c)-flattened patches is a stride-p convolution; so are
    their z^B rules, with the same bounds (each sample's min and max)."""
    p, channels, rows, cols = 2, 3, 2, 3
    x, weight = rand(2, channels, rows * p, cols * p), rand(4, channels, p, p)
    relevance = rand(2, 4, rows, cols)
    expected = bounded_conv_rule(x, weight, relevance, (p, p), (0, 0))
    patches = torch.zeros(2, rows * cols, p * p * channels, dtype=torch.float64)
    for b in range(2):
        for r in range(rows):
            for c in range(cols):
                for py in range(p):
                    for px in range(p):
                        for ch in range(channels):
                            patches[b, r * cols + c, (py * p + px) * channels + ch] = x[b, ch, r * p + py, c * p + px]
    linear = weight.permute(0, 2, 3, 1).reshape(4, -1)
    low = x.amin(dim=(1, 2, 3)).view(2, 1, 1)
    high = x.amax(dim=(1, 2, 3)).view(2, 1, 1)
    r_tokens = relevance.flatten(2).transpose(1, 2)  # (B, P, D)
    got = bounded_linear_rule(patches, linear, r_tokens, low, high)
    for b in range(2):
        for r in range(rows):
            for c in range(cols):
                for py in range(p):
                    for px in range(p):
                        for ch in range(channels):
                            torch.testing.assert_close(
                                got[b, r * cols + c, (py * p + px) * channels + ch],
                                expected[b, ch, r * p + py, c * p + px],
                            )
