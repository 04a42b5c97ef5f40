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


def _level_as_file(run):
    shutil.rmtree(run / "level_002")
    (run / "level_002").write_text("not a folder")


def _stale_stop(run):
    (run / "stopped.json").write_text(json.dumps(dict(reason="nothing left to prune", after_level=2)))


DAMAGE = {
    "hole": (lambda run: (run / "level_002" / "metrics.json").unlink(), "level_002 is missing or unfinished"),
    "edited metric": (_edit_metric, "metrics.json is damaged or was edited"),
    "truncated metrics": (_truncate, "metrics.json is unreadable"),
    "damaged weights": (_flip_state, "state.pt is damaged"),
    "stale stop": (_stale_stop, "stopped.json is stale"),
    "leftover temporary folder": (lambda run: (run / "level_006.abc.tmp").mkdir(), "leftover temporary entry"),
    "level folder replaced by a file": (_level_as_file, "level_002 is a file where a level folder belongs"),
    "garbage init": (lambda run: (run / "init.pt").write_bytes(b"\x00garbage" * 50), "init.pt is unreadable"),
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


def test_leftover_temporary_files_of_killed_writers_are_removed_and_levels_are_readable(reference, tmp_path, capsys):
    import os
    import time
    st, run = _copy(reference, tmp_path)
    (st.root / "rounds").mkdir(exist_ok=True)
    old = [st.root / "index.tsv.k1ll3d.tmp", st.root / "rounds" / "0123abcd.json.k1ll3d.tmp"]
    fresh = st.root / "index.tsv.w0rk1ng.tmp"  # a live writer's: renamed within moments, never touched
    for p in [*old, fresh]: p.write_text("{")
    for p in old: os.utime(p, (time.time() - 3600,) * 2)
    assert main(["verify", "--store", str(st.root)]) == 1
    out = capsys.readouterr().out
    assert all(f"{p} is a temporary file a killed writer left" in out for p in old) and str(fresh) not in out
    run_imp([CFG], 6, st.root, progress=False)  # holding the trajectory (one more level to train) cleans up
    assert not any(p.exists() for p in old) and fresh.exists()
    assert "was left by a killed writer; removed" in capsys.readouterr().err
    assert all(d.stat().st_mode & 0o777 == run.stat().st_mode & 0o777 for d in run.glob("level_*"))


@pytest.mark.parametrize("damage", ["garbled", "deleted"])
def test_a_garbled_or_deleted_index_is_rebuilt_with_every_run(reference, tmp_path, capsys, damage):
    st, run = _copy(reference, tmp_path)
    index = st.root / "index.tsv"
    line = index.read_text()
    if damage == "garbled": index.write_bytes(b"\xff\xfe garbage\tno\ttabs\n" + line.encode()[:30])
    else: index.unlink()
    assert main(["verify", "--store", str(st.root)]) == 1
    assert "index.tsv is missing or damaged" in capsys.readouterr().out
    other = imp_config("linear", 3, data=dict(n_train=300, n_test=200), train=dict(epochs=2))
    run_imp([CFG, other], 1, st.root, progress=False)  # a new run: the index gets its line and keeps the old run's
    names = [l.split("\t")[0] for l in index.read_text().splitlines()]
    assert sorted(names) == sorted([run.name, st.find(other, config_label(other)).name])
    (run / "config.json").write_text(json.dumps({**CFG.to_dict(), "width": 7}))  # and the old run can be restored
    assert main(["verify", "--store", str(st.root), "--repair"]) == 0
    assert st.find(CFG, config_label(CFG)) == run and main(["verify", "--store", str(st.root)]) == 0


def test_an_unreadable_round_record_is_named_and_verify_repairs_it(reference, tmp_path, capsys):
    import os
    import time
    st, run = _copy(reference, tmp_path)
    old = time.time() - 3600  # levels 0-3 were written before the round began, 4 and 5 after
    for l in range(4): os.utime(run / f"level_{l:03d}" / "metrics.json", (old, old))
    record = st.begin_round([run], [4])
    os.utime(record, (old + 60, old + 60))
    record.write_text('{"' + run.name[:5])  # truncated
    os.utime(record, (old + 60, old + 60))
    with pytest.raises(DamagedRecord, match=f"{record} is unreadable.*verify --repair"):
        run_imp([CFG], 5, st.root, progress=False)
    assert main(["verify", "--store", str(st.root), "--repair"]) == 0
    assert "2 level(s) written since it began removed" in capsys.readouterr().out
    assert st.levels(run) == [0, 1, 2, 3] and st.unfinished_rounds() == []
    run_imp([CFG], 5, st.root, progress=False)
    assert [st.level_metrics(run, l)["test_error"] for l in range(6)] == reference[1]


def test_analysis_refuses_a_run_that_lost_its_config(reference, tmp_path, capsys):
    from lottery_nb.results import trajectories
    st, run = _copy(reference, tmp_path)
    (run / "config.json").unlink()
    with pytest.raises(DamagedRecord, match=f"{run.name}.*hold levels but no config.json.*verify --repair"):
        trajectories(st.root)
    assert main(["verify", "--store", str(st.root), "--repair"]) == 0
    assert len(trajectories(st.root)) == 6


def test_a_complete_store_is_read_without_locking_or_writing(reference, tmp_path, monkeypatch):
    st, run = _copy(reference, tmp_path)
    def refuse(*a, **k): raise PermissionError("read-only store")
    monkeypatch.setattr(RunStore, "hold", refuse)
    monkeypatch.setattr(RunStore, "lock", refuse)
    assert run_imp([CFG], 5, st.root, progress=False) == [run]
    with pytest.raises(PermissionError):  # one level more must be trained, so it is held
        run_imp([CFG], 6, st.root, progress=False)


def test_a_trajectory_without_its_last_weights_recomputes_them_to_continue(reference, tmp_path, capsys):
    st, run = _copy(reference, tmp_path)
    (run / "level_005" / "state.pt").unlink()
    assert run_imp([CFG], 5, st.root, progress=False) == [run] and st.levels(run) == [0, 1, 2, 3, 4, 5]  # complete
    run_imp([CFG], 6, st.root, progress=False)  # to continue, level 5 is recomputed first
    assert "level_005 kept no weights for the next level to start from" in capsys.readouterr().err
    assert [st.level_metrics(run, l)["test_error"] for l in range(6)] == reference[1] and st.levels(run)[-1] == 6
