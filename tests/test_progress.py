"""Progress events: the file reporter, the reader, the ETA, the live line, and IMP's plan against what it trains."""
import json
import threading
import time
import warnings

import pytest

from lottery_nb import progress
from lottery_nb.imp import build_dataset, imp_config, plan_trajectory, run_imp
from lottery_nb.progress import (ENV, BarReporter, FileReporter, Reporter, describe, read_events, reporter, stage,
                                 summary, watch)
from lottery_nb.store import RunStore

SMALL = dict(data=dict(n_train=200, n_test=100), train=dict(epochs=1))


def test_file_reporter_writes_one_json_line_per_event(tmp_path, monkeypatch):
    path = tmp_path / 'events.jsonl'
    monkeypatch.setenv(ENV, str(path))
    rep = reporter()
    assert isinstance(rep, FileReporter)
    rep.stage('data', '2 datasets')
    rep.emit('plan', rounds=2, trajectories=3, levels=4, levels_done=1, work=5.5)
    stage('plotting')
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e['event'] for e in events] == ['stage', 'plan', 'stage']
    assert all(isinstance(e['t'], float) for e in events)
    assert events[1]['work'] == 5.5 and events[2]['stage'] == 'plotting'


def test_reporter_without_file(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert type(reporter()) is BarReporter
    assert type(reporter(draw=False)) is Reporter
    stage('tables')  # goes nowhere
    with pytest.raises(ValueError, match="unknown stage 'drawing'"): stage('drawing')


def test_read_events_leaves_out_a_partial_last_line(tmp_path):
    path = tmp_path / 'events.jsonl'
    assert read_events(path) == []
    FileReporter(path).stage('data')
    FileReporter(path).stage('training', 'round 1/2 · levels 0–0')
    data = path.read_bytes()
    partial = '{"event": "stage", "t": 1.0, "stage": "tables", "detail": "–'.encode()[:-1]  # a character cut in half
    path.write_bytes(data + partial)
    assert [e['stage'] for e in read_events(path)] == ['data', 'training']
    path.write_bytes(data[:-5])
    assert [e['stage'] for e in read_events(path)] == ['data']


def _events():
    return [dict(event='stage', t=100.0, stage='data', detail=''),
            dict(event='plan', t=110.0, rounds=4, trajectories=6, levels=20, levels_done=5, work=200.0),
            dict(event='stage', t=110.0, stage='training', detail='round 1/4 · 6 traj · levels 0–0'),
            dict(event='round', t=150.0, round=1, rounds=4, trajectories=5, levels=[0, 0], seconds=40.0,
                 work_done=80.0, work=200.0, levels_done=11),
            dict(event='stage', t=150.0, stage='training', detail='round 2/4 · 6 traj · levels 1–1')]


def test_summary_and_eta():
    s = summary(_events(), now=160.0)
    assert (s['stage'], s['round'], s['rounds'], s['trajectories'], s['round_trajectories']) == ('training', 1, 4, 6, 5)
    assert (s['levels_done'], s['levels'], s['work_done'], s['work']) == (11, 25, 80.0, 200.0)
    assert s['elapsed'] == 60.0
    # 80 of 200 units in 40 s since the plan: 120 left take 60 s, 10 s of which have passed
    assert s['eta_seconds'] == pytest.approx(50.0)
    assert summary(_events(), now=500.0)['eta_seconds'] == 0.0
    assert progress.eta(40.0, 80.0, 200.0) == pytest.approx(60.0)
    line = '[1/4] fig2 · 40% · ETA 0:50 · training round 2/4 · 6 traj · levels 1–1 · 40.0 s/round'
    assert describe(s, '[1/4] fig2') == line
    end = _events() + [dict(event='done', t=300.0), dict(event='stage', t=301.0, stage='plotting', detail='')]
    assert summary(end)['eta_seconds'] is None
    assert describe(summary(end), 'fig2') == 'fig2 · plotting'
    assert describe(summary(_events()[:2] + [dict(event='done', t=120.0)]), 'x') == 'x · data'


def _run(tmp_path, monkeypatch, cfgs, levels, min_params=None, root=None):
    "Run with events going to a file: (plan event, round events, runs)."
    path = tmp_path / f'events{time.monotonic_ns()}.jsonl'
    monkeypatch.setenv(ENV, str(path))
    runs = run_imp(cfgs, levels, store=root or tmp_path / 'store', min_params=min_params)
    monkeypatch.delenv(ENV)
    ev = read_events(path)
    assert ev[0] == {**ev[0], 'event': 'stage', 'stage': 'data'} and ev[-1]['event'] == 'done'
    plans = [e for e in ev if e['event'] == 'plan']
    assert len(plans) == 1
    return plans[0], [e for e in ev if e['event'] == 'round'], runs


@pytest.mark.parametrize('min_params,cases', [
    (None, [('xor', 16, dict(), 3),                                         # target level
            ('xor', 1, dict(prune_output=False), 40),                       # nothing left, protected output layer
            ('linear', 1, dict(), 40),                                      # nothing left, everything prunable
            ('xor', 1, dict(prune_output=False, prune_rule='exact'), 40)]),  # rule 'exact'
    (30, [('xor', 4, dict(), 40), ('linear', 16, dict(), 40)]),            # min_params
])
def test_plan_predicts_what_is_stored(tmp_path, monkeypatch, min_params, cases):
    cfgs = [imp_config(d, w, **SMALL, **kw) for d, w, kw, _ in cases]
    levels = [t for *_, t in cases]
    plan, rounds, runs = _run(tmp_path, monkeypatch, cfgs, levels, min_params)
    st = RunStore(tmp_path / 'store')
    paths = [plan_trajectory(c, build_dataset(c), t, min_params) for c, t in zip(cfgs, levels)]
    for (counts, stops), run in zip(paths, runs):
        assert [m['counted'] for m in st.metrics(run)] == counts
        assert st.stopped(run) == stops
    stored = sum(len(st.levels(r)) for r in runs)
    assert (plan['levels'], plan['levels_done'], plan['trajectories']) == (stored, 0, len(cfgs))
    assert plan['rounds'] == len(rounds) == max(len(counts) + stops for counts, stops in paths)
    assert [r['round'] for r in rounds] == list(range(1, len(rounds) + 1))
    assert rounds[-1]['levels_done'] == stored and rounds[-1]['work_done'] == pytest.approx(plan['work'])
    assert all(b['work_done'] >= a['work_done'] for a, b in zip(rounds, rounds[1:]))
    m = st.level_metrics(runs[0], 0)
    assert {'lottery_nb', 'commit', 'dirty', 'torch', 'numpy', 'device', 'threads', 'written'} <= set(m['provenance'])


def test_plan_of_a_resumed_run(tmp_path, monkeypatch):
    cfgs = [imp_config('xor', 8, r, **SMALL) for r in range(2)]
    run_imp(cfgs, 2, store=tmp_path / 'store', progress=False)
    plan, rounds, runs = _run(tmp_path, monkeypatch, cfgs + [imp_config('xor', 4, **SMALL)], [5, 5, 0])
    assert (plan['levels_done'], plan['levels'], plan['rounds'], plan['trajectories']) == (6, 7, 3, 3)
    assert [r['levels'] for r in rounds] == [[0, 3], [4, 4], [5, 5]]
    assert [r['trajectories'] for r in rounds] == [3, 2, 2]
    plan, rounds, _ = _run(tmp_path, monkeypatch, cfgs, 5)
    assert (plan['rounds'], plan['levels'], plan['work'], rounds) == (0, 0, 0.0, [])


def test_no_bar_and_no_warning_when_events_go_to_a_file(tmp_path, monkeypatch, capfd):
    def no_bar(): raise AssertionError('a tqdm bar was made')
    monkeypatch.setattr(progress, 'bar_class', no_bar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        _run(tmp_path, monkeypatch, [imp_config('xor', 4, **SMALL)], 2)
    assert not [w for w in caught if 'Tqdm' in type(w.message).__name__ or 'tqdm' in str(w.message).lower()]
    assert capfd.readouterr().err == ''


def test_bar_without_file(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv(ENV, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        run_imp([imp_config('xor', 4, **SMALL)], 2, store=tmp_path / 'store')
    err = capfd.readouterr().err
    assert 'IMP 100%' in err and 'round 3/3' in err
    assert not [w for w in caught if 'Tqdm' in type(w.message).__name__]
    run_imp([imp_config('xor', 8, **SMALL)], 1, store=tmp_path / 'store', progress=False)
    assert capfd.readouterr().err == ''


def test_watch_renders_and_stops(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '200')
    path = tmp_path / 'events.jsonl'
    kernel = FileReporter(path)
    with watch(path, '[1/2] demo', interval=0.02):
        kernel.stage('data')
        kernel.emit('plan', rounds=2, trajectories=2, levels=3, levels_done=0, work=10.0)
        kernel.stage('training', 'round 1/2 · 2 traj · levels 0–0')
        time.sleep(0.15)
        kernel.emit('round', round=1, rounds=2, trajectories=2, levels=[0, 0], seconds=0.1, work_done=6.0,
                    work=10.0, levels_done=2)
        kernel.stage('training', 'round 2/2 · 1 traj · levels 1–1')
        time.sleep(0.15)
        kernel.emit('round', round=2, rounds=2, trajectories=1, levels=[1, 1], seconds=0.1, work_done=10.0,
                    work=10.0, levels_done=3)
        kernel.emit('done')
        kernel.stage('saving')
    assert not [t for t in threading.enumerate() if t.name == 'progress watch']
    err = capsys.readouterr().err
    shown = [s.strip() for s in err.replace('\n', '\r').split('\r') if s.strip()]
    assert any(s.startswith('[1/2] demo · 0% · training round 1/2') for s in shown)
    assert any(s.startswith('[1/2] demo · 60% · ETA') and 'round 2/2 · 1 traj · levels 1–1 · 0.1 s/round' in s for s in shown)
    assert shown[-1] == '[1/2] demo · saving' and err.endswith('\n')
    with watch(path, 'off', enabled=False): pass
    assert capsys.readouterr().err == ''
