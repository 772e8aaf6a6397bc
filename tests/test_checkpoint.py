"""Checkpoints: atomic writes, weights-only loads, refusal of tampered / newer / corrupt files."""

import io
import os
import pickle
import zipfile

import pytest
import standins
import torch

from hoconv.app.engine import checkpoint as ck


@pytest.fixture(autouse=True)
def _standins():
    standins.install()


def _ckpt(**kw):
    model = standins.TinyNet(dim=2, num_outputs=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    spec = {"name": "test_tiny2d", "kwargs": {"num_outputs": 2}, "transductions": []}
    return model, ck.make_checkpoint(
        model_spec=spec,
        state_dict=model.state_dict(),
        epoch=3,
        config={"lr": 0.1, "betas": [0.9, 0.999]},
        optimizer=opt.state_dict(),
        **kw,
    )


def test_roundtrip_rebuilds_the_model(tmp_path):
    model, ckpt = _ckpt()
    path = ck.write_checkpoint(tmp_path / "a.pt", ckpt)
    back = ck.read_checkpoint(path)
    assert (
        back["epoch"] == 3
        and back["hoconv_version"]
        and back["format_version"] == ck.FORMAT_VERSION
    )
    assert back["optimizer"]["state"][0]["exp_avg"].shape == model.conv.weight.shape
    loaded, meta = ck.load_model(path)
    assert meta["model"]["name"] == "test_tiny2d" and "state_dict" not in meta
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not loaded.training


def test_write_is_atomic_when_saving_fails(tmp_path, monkeypatch):
    _, good = _ckpt()
    path = ck.write_checkpoint(tmp_path / "last.pt", good)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.write_checkpoint(path, good)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_newer_format_is_refused(tmp_path):
    _, ckpt = _ckpt()
    ckpt["format_version"] = ck.FORMAT_VERSION + 1
    ckpt["digest"] = ck.digest(ckpt)
    ck.write_checkpoint(tmp_path / "new.pt", ckpt)
    with pytest.raises(ck.CheckpointError, match="newer"):
        ck.read_checkpoint(tmp_path / "new.pt")


def test_tampered_weights_are_refused(tmp_path):
    _, ckpt = _ckpt()
    ckpt["state_dict"]["head.bias"] = ckpt["state_dict"]["head.bias"] + 1  # digest unchanged
    torch.save(ckpt, tmp_path / "t.pt")
    with pytest.raises(ck.CheckpointError, match="tampered"):
        ck.read_checkpoint(tmp_path / "t.pt")


def test_tampered_bytes_in_the_archive_are_refused(tmp_path):
    _, ckpt = _ckpt()
    path = ck.write_checkpoint(tmp_path / "b.pt", ckpt)
    src = zipfile.ZipFile(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename and len(data) >= 4 and not info.filename.endswith(".pkl"):
                data = bytes([data[0] ^ 0xFF]) + data[1:]  # flip bits of one stored tensor
            dst.writestr(info, data)
    path.write_bytes(buf.getvalue())
    with pytest.raises(ck.CheckpointError):
        ck.read_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_carrying_pickle_is_refused(tmp_path):
    _, ckpt = _ckpt()
    ckpt["config"] = {"x": _Evil()}
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save(ckpt, f, pickle_module=pickle)
    with pytest.raises(ck.CheckpointError, match="weights-only"):
        ck.read_checkpoint(tmp_path / "evil.pt")


def test_truncated_and_foreign_files_are_refused(tmp_path):
    _, ckpt = _ckpt()
    path = ck.write_checkpoint(tmp_path / "c.pt", ckpt)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ck.CheckpointError, match="refused"):
        ck.read_checkpoint(path)
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(ck.CheckpointError, match="not a hoconv checkpoint"):
        ck.read_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError):
        ck.read_checkpoint(tmp_path / "missing.pt")


def test_transduced_checkpoint_rebuilds_and_keeps_frame_outputs(tmp_path):
    pytest.importorskip("hoconv.transduction")
    pytest.importorskip("hoconv.models.resnet")
    from hoconv.models import create_model

    model = create_model("cp_resnet18_2d", num_outputs=2, width=4).eval()
    spec = {"name": "cp_resnet18_2d", "kwargs": {"num_outputs": 2, "width": 4}, "transductions": []}
    ck.write_checkpoint(
        tmp_path / "2d.pt",
        ck.make_checkpoint(
            model_spec=spec, state_dict=model.state_dict(), epoch=1, config={"mode": "static"}
        ),
    )
    new_spec = ck.transduce_checkpoint(
        tmp_path / "2d.pt", tmp_path / "3d.pt", dims=1, kernel_size=3, init="center"
    )
    assert new_spec["transductions"] == [{"dims": 1, "kernel_size": 3, "init": "center"}]
    video, meta = ck.load_model(tmp_path / "3d.pt")
    assert meta["config"]["mode"] == "video"
    frame = torch.randn(2, 3, 32, 32)
    clip = frame[:, :, None].expand(2, 3, 5, 32, 32).contiguous()  # identical frames
    with torch.no_grad():
        per_frame = video(clip)  # (N, T, 2)
        want = model(frame)
    for t in range(5):
        torch.testing.assert_close(per_frame[:, t], want, rtol=1e-4, atol=1e-5)
