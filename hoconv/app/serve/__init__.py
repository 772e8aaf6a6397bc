"""``hoconv serve``: a local web page to upload an image / video or stream a webcam and see
valence / arousal per face and frame (annotated frames, curves over time, the circumplex,
a table of rows).

Usage::

    from hoconv.app.serve import ServeConfig, create_app
    from hoconv.app.serve.jobs import Checkpoints
    app = create_app(ServeConfig(Checkpoints({"best": Path("runs/img/best.pt")}), Path("up")))
    app.run("127.0.0.1", 8000)

Modules: :mod:`~hoconv.app.serve.app` (Flask routes), :mod:`~hoconv.app.serve.uploads` (checks,
names, paths), :mod:`~hoconv.app.serve.jobs` (checkpoints, prediction, payloads). Needs the
``serve`` extra (Flask): ``pip install -e ".[serve]"``.
"""

from __future__ import annotations

from hoconv.app.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
