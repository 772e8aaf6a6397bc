"""`hoconv layers`: the appendix's Jester stack table and its errors."""

from hoconv.app.cli import main


def test_layers_prints_the_jester_counts(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("| total"))
    cells = [c.strip() for c in total.split("|")]
    assert cells[4] == "2,880,576"  # dense conv parameters of the 4-layer 3x3x3 stack
    assert (
        cells[5] == f"{1_180_632 + 6 * (3 + 64 + 128 + 256):,}"
    )  # CP factors + weights, rank 6 x C


def test_layers_custom_stack_and_bad_input(capsys):
    assert (
        main(
            [
                "layers",
                "--channels",
                "64:64",
                "--dim",
                "2",
                "--input-size",
                "8",
                "8",
                "--rank",
                "same",
            ]
        )
        == 0
    )
    assert "R=273" in capsys.readouterr().out  # the "same parameters as the 2-D conv" rank
    assert main(["layers", "--channels", "64-64"]) == 2
    assert "IN:OUT" in capsys.readouterr().err
    assert main(["layers", "--dim", "2"]) == 2
    assert "--input-size needs 2 ints" in capsys.readouterr().err
