"""A figure run through SLURM (slow, about a minute on a single-node cluster): `lottery-nb run --executor slurm`
submits the trajectories as a job array; one job is requeued while it runs, as a preemption would; `lottery-nb status`
shows the jobs meanwhile; the final run store equals a local run's, number for number and weight for weight.
Skipped where no SLURM cluster answers (`sinfo` finds no idle node)."""
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import assert_same_results, stored_results
from lottery_nb.executors import job_states



def _cluster_up():
    if not shutil.which("sbatch") or not shutil.which("sinfo"): return False
    try: out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError): return False
    return any(s.strip() in ("idle", "mix", "alloc") for s in out.split())


needs_slurm = pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster answers here")
CLI = "import sys; from lottery_nb.cli import main; sys.exit(main())"
FIG = ["fig2_double_descent", "--set", "epochs=3", "--set", "levels=5"]


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_slurm_options_are_checked_before_anything_runs(tmp_path):
    cases = [(["--gpus-per-job", "1"], "need(s) --executor slurm"),
             (["--executor", "pbs"], "unknown executor 'pbs'"),
             (["--executor", "slurm", "--time-min", "0"], "time_min must be an integer >= 1")]  # values first, sbatch or not
    if not shutil.which("sbatch"): cases.append((["--executor", "slurm"], "needs SLURM's sbatch"))
    for args, message in cases:
        p = _cli("run", *FIG, "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s"), *args)
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 2 and message in out and "Traceback" not in out, out
        assert not (tmp_path / "s").exists()


@pytest.mark.slow
@needs_slurm
def test_a_cluster_run_requeued_mid_job_equals_a_local_run(tmp_path):
    local = _cli("run", *FIG, "--out", str(tmp_path / "local"), "--store", str(tmp_path / "local_store"), "--no-progress")
    assert local.wait(timeout=600) == 0, local.stdout.read()
    out = tmp_path / "cluster"
    p = _cli("run", *FIG, "--out", str(out), "--store", str(tmp_path / "cluster_store"), "--no-progress",
             "--executor", "slurm", "--cpus-per-job", "1", "--trajectories-per-job", "2", "--time-min", "10")
    requeued, seen = [], []

    def preempt():  # requeue the first job seen running, and read `lottery-nb status` while jobs are live
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 300:
            events = list(out.glob("*/.*.running/progress.jsonl"))
            ids = [l.split('"jobs": {')[1].split('"')[1] for e in events for l in e.read_text().splitlines()
                   if '"jobs"' in l]
            running = [i for i, s in job_states(ids).items() if s == "running"]
            if running and not requeued:
                r = subprocess.run(["scontrol", "requeue", running[0]], capture_output=True, text=True)
                requeued.append((running[0], r.returncode, r.stderr))
                seen.append(subprocess.run([sys.executable, "-c", CLI, "status", "--out", str(out)],
                                           capture_output=True, text=True).stdout)
            time.sleep(0.5)

    watcher = threading.Thread(target=preempt)
    watcher.start()
    text, _ = p.communicate(timeout=900)
    watcher.join()
    assert p.returncode == 0, text
    assert requeued and requeued[0][1] == 0, requeued
    assert seen and "jobs " in seen[0], seen
    a, b = stored_results(tmp_path / "local_store"), stored_results(tmp_path / "cluster_store")
    assert a.keys() == b.keys() and len(a) > 0
    assert_same_results(a, b)
    jobs = list(out.rglob("slurm/*_submitted.pkl"))
    assert len(jobs) >= 2  # a job array, not one job
    print(f"{len(jobs)} jobs; requeued {requeued[0][0]}; status while running:", seen[0], sep="\n")
