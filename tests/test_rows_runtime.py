"""Matrix views / GEMM helpers of the fast path (hoconv._fast.rows) and hoconv.app.runtime."""

from __future__ import annotations

import platform

import pytest
import torch

from hoconv._fast.rows import channels_last, empty_like_layout, mm_rows, rows, tmm_rows
from hoconv.app import runtime


def layouts(shape):
    x = torch.randn(shape, dtype=torch.float64)
    return {"cf": x, "cl": x.movedim(1, -1).contiguous().movedim(-1, 1)}


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 5, 3), (1, 3, 2, 2, 2)])
def test_rows_is_a_view_in_both_layouts(shape):
    for name, x in layouts(shape).items():
        r = rows(x)
        expected = x.reshape(shape[0], shape[1], -1).transpose(1, 2)  # (N, P, C)
        torch.testing.assert_close(r, expected)
        assert r.data_ptr() == x.data_ptr()  # no copy
        assert channels_last(x) == (name == "cl")
        out = empty_like_layout(x, shape[0], 7, *shape[2:])
        assert out.shape == (shape[0], 7, *shape[2:]) and channels_last(out) == (name == "cl")


@pytest.mark.parametrize("n,m,k,cols", [(3, 10, 4, 5), (2, 3, 8, 6), (1, 5, 5, 5)])
@pytest.mark.parametrize("bias", [False, True])
def test_mm_rows_matches_einsum_for_every_layout(n, m, k, cols, bias):
    b = torch.randn(k, cols, dtype=torch.float64)
    beta = torch.randn(cols, dtype=torch.float64) if bias else None
    flat = torch.randn(n, m, k, dtype=torch.float64)
    transposed = torch.randn(n, k, m, dtype=torch.float64).transpose(1, 2)
    for a in (flat, transposed):
        expected = torch.einsum("nmk,kl->nml", a, b) + (0 if beta is None else beta)
        torch.testing.assert_close(mm_rows(a, b, bias=beta), expected)
        for out in (torch.empty(n, m, cols, dtype=torch.float64),
                    torch.empty(n, cols, m, dtype=torch.float64).transpose(1, 2)):  # fmt: skip
            result = mm_rows(a, b, out, beta)
            torch.testing.assert_close(out, expected)
            assert result.data_ptr() == out.data_ptr()


@pytest.mark.parametrize("n,m,k,cols", [(3, 10, 4, 5), (2, 3, 8, 6), (1, 5, 5, 5)])
def test_tmm_rows_matches_einsum(n, m, k, cols):
    a_flat, b_flat = (torch.randn(n, m, d, dtype=torch.float64) for d in (k, cols))
    a_t = torch.randn(n, k, m, dtype=torch.float64).transpose(1, 2)
    for a in (a_flat, a_t):
        torch.testing.assert_close(tmm_rows(a, b_flat), torch.einsum("nmk,nml->kl", a, b_flat))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_applies_on_glibc():
    assert runtime.tune_allocator() is True
    x = torch.randn(1 << 20)  # allocation still works afterwards
    assert torch.isfinite(x.sum())


def test_cli_tunes_the_allocator_unless_asked_not_to(monkeypatch, capsys):
    from hoconv.app import cli

    calls = []
    monkeypatch.setattr(runtime, "tune_allocator", lambda: calls.append(1) or True)
    assert cli.main(["layers"]) == 0
    assert calls == [1]
    assert cli.main(["--no-tune-allocator", "layers"]) == 0
    assert calls == [1]
    assert "CP" in capsys.readouterr().out
