"""Allow `python -m hoconv ...` (and `torchrun -m hoconv ...`).

``python -m`` puts the current folder first on ``sys.path``: a ``hoconv/`` package there
(a copy, an unrelated folder with an ``__init__.py``) would be imported instead of this
one. That is refused in one line; ``torchrun --no-python hoconv ...`` (the console
script) never looks in the current folder.
"""

import os
import sys


def _shadowed() -> str | None:
    """Why ``hoconv`` resolves to another folder than this file's, or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    package = sys.modules.get("hoconv")
    found = getattr(package, "__file__", None)
    if found is None or os.path.dirname(os.path.abspath(found)) == here:
        return None
    return (
        f"hoconv: error: {os.path.dirname(found)} shadows the installed hoconv ({here}): "
        "`python -m` / `torchrun -m` look in the current folder first; run from another "
        "folder, or use `torchrun --no-python hoconv ...`"
    )


if (problem := _shadowed()) is not None:
    print(problem, file=sys.stderr)
    sys.exit(2)

from hoconv.app.cli import main  # noqa: E402

sys.exit(main())
