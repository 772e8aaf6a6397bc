"""The shared loader steps of hoconv.app.data.loading: errors name the path, drops are counted."""

import json
import re
import warnings

import numpy as np
import pytest

from hoconv.app.data.loading import (
    FRAME_KEY,
    check_options,
    checked_image,
    finish_report,
    numbered,
    read_or_report,
    require_mode,
    split_mask,
    va_record,
)
from hoconv.app.data.report import CorruptDataError, EpochSeededDataset, LoadReport

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_check_options_names_the_bad_option():
    check_options("val", "video", "decode")
    with pytest.raises(ValueError, match=r"split must be one of .* got 'dev'"):
        check_options("dev")
    with pytest.raises(ValueError, match=r"mode must be one of .* got 'clips'"):
        check_options("train", "clips")
    with pytest.raises(ValueError, match=r"verify must be one of .* got 'all'"):
        check_options("train", verify="all")


def test_require_mode_says_what_the_data_set_has():
    require_mode("x", "static", "static")
    with pytest.raises(ValueError, match=r"^x has clips only: mode must be 'video', got 'static'$"):
        require_mode("x", "static", "video")
    with pytest.raises(ValueError, match=r"^y has still images only: mode must be 'static'"):
        require_mode("y", "video", "static")


def test_numbered_sorts_by_number_and_keeps_input_order_of_ties():
    jpg = re.compile(r"^(\d+)\.jpg$")
    names = ["10.jpg", "2.jpg", "notes.txt", "0002.jpg", "x1.jpg", "1.jpg"]
    assert numbered(names, jpg) == [(1, "1.jpg"), (2, "2.jpg"), (2, "0002.jpg"), (10, "10.jpg")]
    assert numbered([], jpg) == []
    # frame keys: ASCII digits only, no sign, no trailing newline
    keys = ["00001", "00000", "-1", "1.5", "٣", "7\n", ""]
    assert numbered(keys, FRAME_KEY) == [(0, "00000"), (1, "00001")]


def _bad_json(path):
    with open(path) as fh:
        return json.load(fh)


def test_read_or_report_counts_each_unreadable_file_with_its_path(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"a": 1}')
    bad.write_text("{not json")
    report = LoadReport("set", "train")
    assert read_or_report(_bad_json, str(good), report) == {"a": 1}
    with pytest.warns(RuntimeWarning, match="bad.json"):
        assert read_or_report(_bad_json, str(bad), report) is None
    with pytest.warns(RuntimeWarning, match="missing.json"):
        assert read_or_report(_bad_json, str(tmp_path / "missing.json"), report, "labels") is None
    summary = report.summary()
    assert summary["num_corrupt"] == 2
    assert summary["corrupt"][0]["path"] == str(bad)
    assert summary["corrupt"][0]["reason"].startswith("unreadable annotation (")
    assert summary["corrupt"][1]["reason"].startswith("unreadable labels (")
    # errors outside the listed kinds are not swallowed
    with pytest.raises(KeyError):
        read_or_report(lambda p: {}["k"], str(good), report)
    # on_error="raise": one error naming the file
    strict = LoadReport("set", "val", on_error="raise")
    with pytest.raises(CorruptDataError, match=r"set/val: unreadable file .*bad\.json"):
        read_or_report(_bad_json, str(bad), strict)


def test_checked_image_records_the_problem(tmp_path):
    ok, text = tmp_path / "ok.png", tmp_path / "text.png"
    ok.write_bytes(PNG)
    text.write_text("hello")
    report = LoadReport("set", "train")
    assert checked_image(str(ok), "header", report) == str(ok)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert checked_image(str(text), "header", report) is None
        assert checked_image(str(tmp_path / "gone.png"), "exists", report) is None
    assert [c["reason"] for c in report.corrupt] == ["not a JPEG/PNG/BMP file", "missing"]
    assert report.corrupt[0]["path"] == str(text)


def test_split_mask_partitions():
    held = np.array([True, False, False, True])
    assert split_mask(held, "val").tolist() == [True, False, False, True]
    assert split_mask(held, "train").tolist() == [False, True, True, False]


def test_finish_report_sets_counts_and_prints(capsys):
    report = LoadReport("set", "test")
    report.filter("too dark", 3)
    finish_report(report, loaded=7, videos=2, verbose=False)
    assert capsys.readouterr().err == ""
    assert (report.loaded, report.videos) == (7, 2)
    finish_report(report, loaded=5, videos=1, verbose=True)
    err = capsys.readouterr().err
    assert "set [test]: loaded 5 samples from 1 videos" in err and "too dark" in err


def test_va_record_defaults_and_dtypes():
    rec = va_record("v", "s", [3, 4], [0.5, -0.5], (0.25, 0.0), ["a.png", None])
    assert rec.frames.dtype == np.int64 and rec.valence.dtype == np.float32
    assert rec.arousal.tolist() == [0.25, 0.0]
    assert rec.expression.tolist() == [-1, -1] and rec.labelled.tolist() == [True, True]
    assert rec.boxes is None and rec.landmarks is None and len(rec) == 2
    lab = np.array([True, False])
    rec = va_record("v", "s", [1, 2], [0, 0], [0, 0], [None, None], lab, expression=(2, 7),
                    boxes=np.zeros((2, 4), np.float32))  # fmt: skip
    assert rec.labelled is lab and rec.expression.tolist() == [2, 7] and rec.boxes.shape == (2, 4)


def test_epoch_seeded_dataset_summary_and_epoch():
    class Tiny(EpochSeededDataset):
        def __init__(self):
            self.report = LoadReport("tiny", "train")
            self.report.loaded = 4

    ds = Tiny()
    assert ds.epoch == 0 and ds.summary["loaded"] == 4
    ds.set_epoch(3)
    assert ds.epoch == 3 and Tiny().epoch == 0
