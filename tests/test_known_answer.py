"""The known answer: the committed numbers of three short trajectories come out bit for bit on whatever x86-64 machine
runs the tests, with the portable CPU arithmetic (`tests/known_answer.py` says what they are)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from known_answer import EXPECTED

PINS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "LOTTERY_NB_ARITHMETIC")


def _python(code_or_file, **env):
    """Run Python in a fresh process whose environment has none of the arithmetic settings but those in `env`."""
    base = {k: v for k, v in os.environ.items() if k not in PINS}
    args = [code_or_file] if code_or_file.endswith(".py") else ["-c", code_or_file]
    return subprocess.run([sys.executable, *args], env={**base, **env}, capture_output=True, text=True)


def test_the_known_answer_comes_out_bit_for_bit():
    r = _python(str(Path(__file__).parent / "known_answer.py"), LOTTERY_NB_ARITHMETIC="portable", OMP_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr[-2000:]
    got, want = json.loads(r.stdout), json.loads(EXPECTED.read_text())
    assert got["arithmetic"] == want["arithmetic"], f"this machine's CPU arithmetic is {got['arithmetic']}"
    assert sorted(got["levels"]) == sorted(want["levels"])
    diff = [k for k in want["levels"] if got["levels"][k] != want["levels"][k]]
    assert not diff, (f"{len(diff)} of {len(want['levels'])} levels differ from the known answer; "
                      f"first {diff[0]}: {got['levels'][diff[0]]} against {want['levels'][diff[0]]}")


def test_the_portable_arithmetic_is_the_default_and_is_in_effect():
    r = _python("import lottery_nb.core as c, json; print(json.dumps(c.arithmetic()))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1]) == dict(mode="portable", mkl="compatible", aten="avx2", onednn="avx2")
    r = _python("import lottery_nb.core as c, json; print(json.dumps(c.arithmetic()))", LOTTERY_NB_ARITHMETIC="native")
    assert json.loads(r.stdout.splitlines()[-1])["mkl"] == "off"


def test_an_unknown_arithmetic_is_refused_by_name():
    r = _python("import lottery_nb.core", LOTTERY_NB_ARITHMETIC="fast")
    assert r.returncode != 0 and "unknown LOTTERY_NB_ARITHMETIC 'fast'" in r.stderr


def test_settings_made_too_late_are_reported():
    r = _python("import torch; torch.ones(3) @ torch.ones(3, 2); import lottery_nb.core as c; c.arithmetic()")
    assert r.returncode == 0 and "portable CPU arithmetic asked for but" in r.stderr, r.stderr[-2000:]
