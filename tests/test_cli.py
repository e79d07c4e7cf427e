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


@pytest.mark.parametrize("args,expected", [
    (["eval", "run", "--num-fakes", "0"], "argument --num-fakes: expected an integer >= 1, got '0'"),
    (["eval", "run", "--workers", "0"], "argument --workers: expected an integer >= 1, got '0'"),
    (["invert", "ck", "x.png", "--out", "o", "--workers", "-2"], "argument --workers: expected an integer >= 1"),
    (["render", "ck", "--out", "o", "--frames", "0"], "argument --frames: expected an integer >= 1"),
])
def test_out_of_range_options_are_one_line_before_any_work(args, expected):
    res = subprocess.run([sys.executable, "-m", "gan3d.cli", *args], capture_output=True, text=True)
    assert res.returncode == 2 and expected in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_wrong_kinds_of_output_paths_are_one_line_before_any_work(tmp_path):
    a_file, a_dir = tmp_path / "taken.txt", tmp_path / "folder"
    a_file.write_text("x")
    a_dir.mkdir()
    (a_dir / "keep.txt").write_text("mine")
    png = tmp_path / "photo.png"
    from PIL import Image
    Image.new("RGB", (4, 4)).save(png)
    cases = [(["invert", "ck", str(png), "--out", str(a_file)], f"--out {a_file}: a file is there"),
             (["render", "ck", "--out", str(a_file)], f"--out {a_file}: a file is there"),
             (["report", str(tmp_path), "--out", str(a_dir)], f"--out {a_dir}: a directory is there"),
             (["import-checkpoint", str(png), str(tmp_path / "o")], f"{png}: not a reference snapshot (.pkl)"),
             (["import-checkpoint", str(a_dir), str(tmp_path / "o")], f"{a_dir}: a directory; import-checkpoint"),
             (["import-checkpoint", str(tmp_path / "n.pkl"), str(a_file)], f"OUT {a_file}: a file is there"),
             (["import-checkpoint", str(tmp_path / "n.pkl"), str(a_dir)], f"{a_dir}: exists and is not a gan3d")]
    (tmp_path / "n.pkl").write_bytes(b"\x80\x04N.")
    for args, expected in cases:
        res = subprocess.run([sys.executable, "-m", "gan3d.cli", *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1
    assert (a_dir / "keep.txt").read_text() == "mine"  # nothing already written is lost
