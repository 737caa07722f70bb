"""Running the CLI in-process: exit status, stdout and stderr of one command line."""

import pytest

from freeprompt.cli.main import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def edit_args(model_dir, out, *extra):
    return ["edit", "--model", str(model_dir), "--source", "a red car", "--target", "a blue car", "--steps", "3",
            "--height", "64", "--width", "64", "--quiet", "--out", str(out), *extra]
