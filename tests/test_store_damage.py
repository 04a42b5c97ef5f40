"""A damaged store: every kind of damage is detected, named by path, never used, and recomputed to the same numbers."""
import json
import shutil

import pytest

from lottery_nb.cli import main
from lottery_nb.imp import config_label, imp_config, run_imp
from lottery_nb.store import DamagedRecord, RunStore, problems

CFG = imp_config("linear", 6, data=dict(n_train=300, n_test=200), train=dict(epochs=2))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undamaged store of one trajectory (a bank of one, so retraining a level reproduces it bitwise)."""
    root = tmp_path_factory.mktemp("ref")
    (run,) = run_imp([CFG], 5, root, progress=False)
    return root, [RunStore(root).level_metrics(run, l)["test_error"] for l in range(6)]


def _copy(reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference[0], root)
    st = RunStore(root)
    return st, st.find(CFG, config_label(CFG))


def _edit_metric(run):
    p = run / "level_002" / "metrics.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "test_error": 0.0}))


def _truncate(run):
    p = run / "level_002" / "metrics.json"
    p.write_text(p.read_text()[:40])


def _flip_state(run):
    p = run / "level_002" / "state.pt"
    b = bytearray(p.read_bytes())
    b[-20] ^= 0xFF
    p.write_bytes(bytes(b))


def _stale_stop(run):
    (run / "stopped.json").write_text(json.dumps(dict(reason="nothing left to prune", after_level=2)))


DAMAGE = {
    "hole": (lambda run: (run / "level_002" / "metrics.json").unlink(), "level_002 is missing or unfinished"),
    "edited metric": (_edit_metric, "metrics.json is damaged or was edited"),
    "truncated metrics": (_truncate, "metrics.json is unreadable"),
    "damaged weights": (_flip_state, "state.pt is damaged"),
    "stale stop": (_stale_stop, "stopped.json is stale"),
    "leftover temporary folder": (lambda run: (run / "level_006.abc.tmp").mkdir(), "leftover temporary entry"),
    "edited config": (lambda run: (run / "config.json").write_text(json.dumps({**CFG.to_dict(), "width": 7})), "config.json was edited"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damage_is_named_then_recomputed_to_the_same_numbers(reference, tmp_path, capsys, kind):
    st, run = _copy(reference, tmp_path)
    damage, message = DAMAGE[kind]
    damage(run)
    found = problems(st, run)
    assert found and any(message in m and str(run) in m for _, m in found), found
    run_imp([CFG], 5, st, progress=False)
    assert message in capsys.readouterr().err
    assert problems(st, run) == []
    assert [st.level_metrics(run, l)["test_error"] for l in range(6)] == reference[1]


def test_damaged_records_are_never_read(reference, tmp_path):
    st, run = _copy(reference, tmp_path)
    _edit_metric(run)
    with pytest.raises(DamagedRecord, match="level_002/metrics.json is damaged or was edited"):
        st.metrics(run)
    _flip_state(run)
    with pytest.raises(DamagedRecord, match="is damaged"):
        st.state(run, 2)
    (run / "config.json").write_text("{")
    with pytest.raises(DamagedRecord, match="config.json is unreadable"):
        st.find(CFG, config_label(CFG))


def test_verify_reports_and_repairs_a_store(reference, tmp_path, capsys):
    st, run = _copy(reference, tmp_path)
    _edit_metric(run)
    assert main(["verify", "--store", str(st.root)]) == 1
    out = capsys.readouterr().out
    assert "level_002/metrics.json is damaged or was edited" in out and "1 run(s) checked, 1 problem(s)" in out
    assert main(["verify", "--store", str(st.root), "--repair"]) == 0
    assert st.levels(run) == [0, 1]
    assert main(["verify", "--store", str(st.root)]) == 0


def test_checks_stay_out_of_the_results(reference):
    from lottery_nb.results import trajectories
    t = trajectories(reference[0])
    assert len(t) == 6 and "checksum" not in t.columns and not any(c.startswith("files") for c in t.columns)
