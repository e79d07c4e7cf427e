"""One CLI grammar: options and key=value overrides in any order; every command that writes takes --out."""
import subprocess
import sys

import pytest

from gan3d.cli import build_parser, parse


def test_overrides_and_options_mix_in_any_order():
    a = parse(["train", "e.yaml", "--out", "runs", "training.kimg=8", "--name", "x", "training.gamma=0.2"])
    assert a.out == "runs" and a.name == "x" and a.overrides == ["training.kimg=8", "training.gamma=0.2"]
    b = parse(["bench", "e.yaml", "training.batch=8", "--json", "training.gamma=1"])
    assert b.json and b.overrides == ["training.batch=8", "training.gamma=1"]
    s = parse(["sweep", "s.yaml", "num_samples=2", "--out", "sweeps", "scheduler.kind=asha"])
    assert s.out == "sweeps" and s.overrides == ["num_samples=2", "scheduler.kind=asha"]


@pytest.mark.parametrize("argv", [["train", "e.yaml", "--out", "r", "stray"], ["render", "ck", "--out", "o", "a=b"]])
def test_leftover_words_are_one_clear_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_every_writing_command_takes_out_and_shows_an_example():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for cmd in ("train", "sweep", "render", "report"):
        assert any("--out" in a.option_strings for a in sub[cmd]._actions), cmd
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", "sweep", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "example:\n  gan3d sweep" in res.stdout
