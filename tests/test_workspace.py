"""The fast path's buffer pool (hoconv._fast.workspace): reuse only what nothing refers to."""

from __future__ import annotations

import torch

from hoconv import CPConv
from hoconv import functional as HF
from hoconv._fast import workspace

BIG = (512, 1024)  # 2 MB of float32: pooled


def test_buffers_are_reused_only_when_released():
    a = workspace.empty(BIG, torch.float32)
    b = workspace.empty(BIG, torch.float32)
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    view = a[3]
    del a
    assert workspace.empty(BIG, torch.float32).data_ptr() != ptr  # a view keeps it
    del view
    c = workspace.empty((1024, 512), torch.float32)  # same bytes, other shape
    assert c.data_ptr() == ptr and c.shape == (1024, 512) and c.is_contiguous()
    arr = c.numpy()
    del c
    assert workspace.empty(BIG, torch.float32).data_ptr() != ptr  # the array keeps it
    del arr
    cl = workspace.empty((2, 64, 8, 128), torch.float32, stride=(65536, 1, 8192, 64))
    assert cl.stride() == (65536, 1, 8192, 64)
    small = workspace.empty((4, 4), torch.float32)
    assert small.untyped_storage().nbytes() == 64  # small tensors are not pooled


def test_saved_tensors_keep_their_buffer():
    x = torch.randn(BIG, requires_grad=True)
    e = workspace.empty(BIG, torch.float32).fill_(2.0)
    y = (x * e).sum()  # autograd saves e
    ptr = e.data_ptr()
    del e
    f = workspace.empty(BIG, torch.float32).fill_(5.0)
    assert f.data_ptr() != ptr
    y.backward()
    torch.testing.assert_close(x.grad, torch.full(BIG, 2.0))


def test_clear_drops_free_buffers_only():
    workspace.clear()
    held = workspace.empty(BIG, torch.float32)
    freed = workspace.empty(BIG, torch.float32)
    del freed
    used, free = workspace.pooled_bytes()
    assert used >= held.numel() * 4 and free >= held.numel() * 4
    workspace.clear()
    assert workspace.pooled_bytes()[1] == 0 and workspace.pooled_bytes()[0] >= held.numel() * 4


def test_layer_outputs_and_gradients_never_alias_a_later_call():
    """Two forwards on the fast path, then two backwards: every tensor as if freshly made."""
    torch.manual_seed(0)
    layer = CPConv(16, 16, 3, dim=3, rank=32, padding=1, implementation="fast")
    x1, x2 = (torch.randn(2, 16, 6, 16, 16, requires_grad=True) for _ in range(2))
    out1 = layer(x1)
    ref1 = out1.detach().clone()
    out2 = layer(x2)  # must not write into out1's (or x1's saved) buffers
    assert out1.data_ptr() != out2.data_ptr()
    torch.testing.assert_close(out1, ref1)
    g1, g2 = torch.randn_like(out1), torch.randn_like(out2)
    (gx2,) = torch.autograd.grad(out2, x2, g2)
    (gx1,) = torch.autograd.grad(out1, x1, g1)
    for x, g, gx in ((x1, g1, gx1), (x2, g2, gx2)):
        xr = x.detach().requires_grad_(True)
        args = (layer.weights, layer.in_factor, list(layer.kernel_factors), layer.out_factor)
        ref = HF.cp_conv(xr, *args, layer.bias, 1, 1)
        (expected,) = torch.autograd.grad(ref, xr, g)
        torch.testing.assert_close(gx, expected, rtol=1e-4, atol=1e-4)
    assert gx1.data_ptr() != gx2.data_ptr()
