"""The local worker pool (`Executor('local', workers=K)`, `lottery-nb run --workers K`): the store it leaves equals a
single process's weight for weight, no level is trained twice, a killed worker loses nothing, bad values are
refused before anything runs. About 2 minutes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_same_results, stored_results
from lottery_nb.executors import Executor, WorkersFailed, current_executor, run_pool
from lottery_nb.imp import grid_configs, run_imp
from lottery_nb.progress import ENV as PROGRESS, read_events
from lottery_nb.store import RunStore, problems

SMALL = dict(data=dict(n_train=600, n_test=200), train=dict(epochs=4))


def _configs():
    return grid_configs('xor', [4, 16, 64], replicates=2, **SMALL) + grid_configs('linear', [16], replicates=1, **SMALL)


def _levels(root):
    st = RunStore(root)
    return {name: st.levels(st.root / name) for name, _ in st.runs()}


def _trained(events):
    "Levels the round events say were trained."
    return sum(e['trajectories'] for e in events if e['event'] == 'round')


def test_pool_store_equals_one_process_and_trains_each_level_once(tmp_path, monkeypatch):
    cfgs = _configs()
    alone = run_imp(cfgs, 3, tmp_path / 'one', progress=False)
    monkeypatch.setenv(PROGRESS, str(tmp_path / 'events.jsonl'))
    runs = run_imp(cfgs, 3, tmp_path / 'two', executor=Executor(workers=2))
    assert [r.name for r in runs] == [r.name for r in alone]
    one, two = stored_results(tmp_path / 'one'), stored_results(tmp_path / 'two')
    assert sorted(one) == sorted(two) and len(one) == len(cfgs) * 4
    assert_same_results(one, two)
    ev = read_events(tmp_path / 'events.jsonl')
    plan = [e for e in ev if e['event'] == 'plan']
    assert len(plan) == 1 and plan[0]['levels'] == len(one) and plan[0]['trajectories'] == len(cfgs)
    assert _trained(ev) == len(one) and ev[-1]['event'] == 'done'
    rounds = [e for e in ev if e['event'] == 'round']
    assert rounds[-1]['levels_done'] == len(one) and rounds[-1]['trajectories_done'] == len(cfgs)
    assert abs(rounds[-1]['work_done'] - plan[0]['work']) < 1e-6 * plan[0]['work']
    # asked again, the pool finds nothing to do and starts no worker
    monkeypatch.setenv(PROGRESS, str(tmp_path / 'again.jsonl'))
    run_imp(cfgs, 3, tmp_path / 'two', executor=Executor(workers=2))
    assert _trained(read_events(tmp_path / 'again.jsonl')) == 0


def test_two_pools_sharing_a_store_train_each_level_once(tmp_path):
    script = ("import sys\nfrom lottery_nb.executors import Executor\nfrom lottery_nb.imp import grid_configs, run_imp\n"
              f"cfgs = grid_configs('xor', [4, 16, 64], replicates=2, **{SMALL!r})\n"
              "run_imp(cfgs, 3, sys.argv[1], executor=Executor(workers=2))\n")
    procs = []
    for k in range(2):
        env = dict(os.environ, **{PROGRESS: str(tmp_path / f'events{k}.jsonl')})
        procs.append(subprocess.Popen([sys.executable, '-c', script, str(tmp_path / 'store')], env=env,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs: assert p.wait(timeout=600) == 0, p.stderr.read()
    stored = sum(map(len, _levels(tmp_path / 'store').values()))
    assert stored == 6 * 4
    assert sum(_trained(read_events(tmp_path / f'events{k}.jsonl')) for k in range(2)) == stored


def _workers(pid):
    "Pids of the pool workers a process has spawned (not multiprocessing's resource tracker)."
    out = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            ppid = int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            cmd = (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
        except (OSError, IndexError, ValueError): continue
        if ppid == pid and 'spawn_main' in cmd and 'resource_tracker' not in cmd: out.append(int(d.name))
    return out


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='finds worker processes through /proc')
def test_a_killed_worker_loses_nothing_and_its_unit_is_finished(tmp_path):
    ref = tmp_path / 'ref'
    run_imp(_configs(), 4, ref, progress=False)
    script = ("import sys\nfrom lottery_nb.executors import Executor\nfrom lottery_nb.imp import grid_configs, run_imp\n"
              f"cfgs = grid_configs('xor', [4, 16, 64], replicates=2, **{SMALL!r})"
              f" + grid_configs('linear', [16], replicates=1, **{SMALL!r})\n"
              "run_imp(cfgs, 4, sys.argv[1], progress=False, executor=Executor(workers=2))\n")
    store = tmp_path / 'killed'
    p = subprocess.Popen([sys.executable, '-c', script, str(store)], stderr=subprocess.PIPE, text=True)
    t0, killed = time.time(), None
    while p.poll() is None and time.time() - t0 < 300 and killed is None:
        if sum(map(len, _levels(store).values())) >= 3 and (ws := _workers(p.pid)):
            killed = ws[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert killed is not None, 'the run ended before a worker could be killed'
    st = RunStore(store)
    assert all(problems(st, st.root / name) == [] for name, _ in st.runs())
    assert _levels(store) == _levels(ref)
    assert_same_results(stored_results(ref), stored_results(store))


def test_killing_the_parent_ends_its_workers(tmp_path):
    script = ("import time\nfrom lottery_nb.executors import run_pool\n"
              "if __name__ == '__main__': run_pool(2, time.sleep, [(600,), (600,)])\n")
    (tmp_path / 'parent.py').write_text(script)
    p = subprocess.Popen([sys.executable, str(tmp_path / 'parent.py')])
    t0 = time.time()
    while len(ws := _workers(p.pid)) < 2 and time.time() - t0 < 120: time.sleep(0.1)
    assert len(ws) == 2, 'the workers did not start'
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.time()
    while any(Path(f'/proc/{w}').exists() for w in ws) and time.time() - t0 < 30: time.sleep(0.1)
    alive = [w for w in ws if Path(f'/proc/{w}').exists()]
    for w in alive: os.kill(w, signal.SIGKILL)
    assert alive == [], f'workers {alive} outlived their killed parent'

def test_a_failing_unit_is_named_and_the_others_finish(tmp_path):
    with pytest.raises(WorkersFailed, match='task 1: ZeroDivisionError'):
        run_pool(2, divmod, [(1, 2), (1, 0), (5, 3)])
    assert run_pool(1, divmod, [(7, 2)]) == [(3, 1)]


def test_executor_workers_travel_in_the_environment(monkeypatch):
    monkeypatch.setenv('LOTTERY_NB_EXECUTOR', Executor(workers=3).to_json())
    assert current_executor() == Executor('local', workers=3)


@pytest.mark.parametrize('args, says', [
    (['--workers', '0'], 'must be a positive integer'),
    (['--workers', 'two'], 'must be a positive integer'),
    (['--workers', '-1'], 'must be a positive integer'),
    (['--executor', 'slurm', '--workers', '2'], "workers=2 is for executor 'local'"),
])
def test_bad_workers_are_refused_before_anything_runs(tmp_path, args, says):
    argv = ['run', 'fig2', '--store', str(tmp_path / 'store'), '--out', str(tmp_path / 'out'), *args]
    code = f"from lottery_nb.cli import main; raise SystemExit(main({argv!r}))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / 'store').exists() and not (tmp_path / 'out').exists()
