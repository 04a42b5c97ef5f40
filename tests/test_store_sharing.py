"""Two runners on one store: no level is trained twice, nothing is clobbered, the index has one line per run."""
import json
import subprocess
import sys

import pytest

from lottery_nb.imp import grid_configs, run_imp
from lottery_nb.store import RunStore

KW = dict(data=dict(n_train=300, n_test=200), train=dict(epochs=3))
SCRIPT = """
import sys
from lottery_nb.imp import grid_configs, run_imp
run_imp(grid_configs('linear', [4, 6, 8], 2, data=dict(n_train=300, n_test=200), train=dict(epochs=3)), 4, sys.argv[1],
        progress=False)
"""


def _numbers(root):
    st = RunStore(root)
    return {name: [m["test_error"] for m in st.metrics(st.root / name)] for name, _ in st.runs()}


def test_two_runners_on_one_store_equal_one_runner(tmp_path):
    alone = tmp_path / "alone"
    run_imp(grid_configs("linear", [4, 6, 8], 2, **KW), 4, alone, progress=False)
    shared = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(shared)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert _numbers(shared) == _numbers(alone)
    lines = (shared / "index.tsv").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 6
    written = [json.loads(p.read_text())["provenance"]["written"] for p in shared.glob("*/level_*/metrics.json")]
    assert len(written) == 6 * 5


def test_a_finished_level_is_never_rewritten(tmp_path):
    st = RunStore(tmp_path)
    (run,) = run_imp(grid_configs("linear", [4], 1, **KW), 1, st, progress=False)
    with pytest.raises(Exception, match="never rewritten"):
        st.write_level(run, 1, dict(level=1))
