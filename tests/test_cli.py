"""The figure runner and the CLI: typed parameters, run folders that never lie, provenance, status, refusals."""
import json
import subprocess
import sys

import papermill as pm
import pytest

from conftest import ROOT
from lottery_nb.cli import main
from lottery_nb.core import ConfigError
from lottery_nb.params import notebook_parameters
from lottery_nb.runner import figures, find_figure, load_preset, plan, presets, status

FIGURES = tuple(figures())  # every figure notebook
PROVENANCE = {"lottery_nb", "commit", "dirty", "python", "torch", "numpy", "device", "threads", "arithmetic", "written"}


def test_presets_name_only_declared_well_typed_parameters(tmp_path):
    assert {"smoke", "cpu", "cpu-cifar", "paper"} <= set(presets())
    for preset in presets():
        for fig in load_preset(preset)["figures"]:
            assert plan(fig, preset, out_root=tmp_path)  # raises on an unknown name or a mistyped value


def test_every_parameter_is_typed_for_papermill():
    for fig in FIGURES:
        _, nb = find_figure(fig)
        ours = notebook_parameters(nb)
        theirs = pm.inspect_notebook(str(nb))
        assert {"out_dir", "store_dir", "device", "replicates", "epochs"} <= set(ours)
        assert list(theirs) == list(ours)
        for k, p in ours.items():
            assert theirs[k]["inferred_type_name"] == p.type != "None", (fig, k)


def _run(isolated, *extra):
    return main(["run", "fig3a", "--preset", "smoke", "--out", str(isolated / "out"), "--store", str(isolated / "st"),
                 "--no-progress", *extra])


def test_a_run_lands_whole_with_typed_parameters_and_provenance(isolated, capfd):
    assert _run(isolated) == 0
    fig = isolated / "out" / "fig3a_effective_params"
    assert sorted(p.name for p in fig.iterdir()) == ["smoke"]
    run_dir = fig / "smoke"
    assert sorted(p.name for p in run_dir.iterdir()) == ["fig3a.pdf", "fig3a.png", "fig3a_effective_params.ipynb", "metrics.json"]
    m = json.loads((run_dir / "metrics.json").read_text())
    p = m["parameters"]
    assert p["epochs"] == 2 and p["noise"] == 0.2 and p["rule"] == "paper" and p["nus"] == [0.4, 0.6]
    assert p["out_dir"] == str(run_dir) and p["store_dir"] == str(isolated / "st") and p["device"] is None
    assert set(m["provenance"]) == PROVENANCE
    assert m["run"]["name"] == "smoke" and m["run"]["preset"] == "smoke" and m["run"]["seconds"] > 0
    text = (run_dir / "fig3a_effective_params.ipynb").read_text()
    assert ".running" not in text and "TqdmWarning" not in text and "IProgress" not in text
    assert json.loads(text)["metadata"]["papermill"]["input_path"] == "nbs/figures/fig3a_effective_params.ipynb"
    out = capfd.readouterr()
    assert "without encryption" not in out.err and "1 of 1 runs succeeded" in out.out


def test_overrides_get_their_own_folder_and_finished_runs_need_force(isolated, capsys):
    assert _run(isolated) == 0
    assert _run(isolated) == 2
    assert "holds a finished run; pass --force" in capsys.readouterr().err
    assert _run(isolated, "--set", "epochs=1") == 0
    fig = isolated / "out" / "fig3a_effective_params"
    assert sorted(p.name for p in fig.iterdir()) == ["smoke", "smoke--epochs=1"]
    before = (fig / "smoke" / "metrics.json").read_text()
    assert _run(isolated, "--force") == 0
    assert json.loads((fig / "smoke" / "metrics.json").read_text())["run"]["ended"] >= json.loads(before)["run"]["ended"]


def test_a_failed_run_is_kept_aside_and_the_good_one_stays(isolated, capsys):
    assert _run(isolated, "--set", "epochs=1") == 0
    # a width of 10^8 passes every check of the parameters, and is refused by the memory check in the kernel
    code = main(["run", "figS1", "--grid", "starts=[100000000],[8]", "--out", str(isolated / "out"),
                 "--store", str(isolated / "st"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "1 of 2 runs succeeded" in captured.out
    assert "ConfigError" in captured.err and "GiB" in captured.err and "cell" in captured.err
    fig = isolated / "out" / "figS1_error_vs_nu"
    assert sorted(p.name for p in fig.iterdir()) == ["custom--starts=100000000.failed", "custom--starts=8"]
    assert "w100000000" in (fig / "custom--starts=100000000.failed" / "error.txt").read_text()
    rows = {(r["figure"], r["run"]): r for r in status(isolated / "out")}
    assert rows[("figS1_error_vs_nu", "custom--starts=100000000")]["state"] == "failed"
    assert rows[("figS1_error_vs_nu", "custom--starts=8")]["state"] == "done"
    assert rows[("fig3a_effective_params", "smoke--epochs=1")]["state"] == "done"
    assert rows[("fig2_double_descent", "cpu")]["state"] == "not started"


def test_status_reports_an_interrupted_run(tmp_path):
    d = tmp_path / "fig2_double_descent" / ".cpu.running"
    d.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (d / "pid").write_text(dead.stdout.strip())
    ev = [dict(t=1.0, event="stage", stage="data", detail=""),
          dict(t=2.0, event="plan", rounds=10, trajectories=6, levels=40, levels_done=0, work=100.0),
          dict(t=3.0, event="round", round=1, rounds=10, trajectories=6, levels=[0, 0], seconds=1.0, work_done=30.0,
               work=100.0, levels_done=6)]
    (d / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    row = next(r for r in status(tmp_path) if r["figure"] == "fig2_double_descent" and r["run"] == "cpu")
    assert row["state"] == "interrupted" and "levels 6 of 40" in row["detail"] and "round 1 of 10" in row["detail"]


@pytest.mark.parametrize("args, message", [
    (["--set", "widht=3"], "unknown parameter(s) ['widht']"),
    (["--set", "widths=8"], "'widths' expects list[int], got 8 (int); write a list, e.g. [8]"),
    (["--set", "tau=abc"], "'tau' expects float, got 'abc'"),
    (["--set", "rule=foo"], "'rule' must be one of ['paper', 'argmin'], got 'foo'"),
    (["--set", "out_dir=x"], "'out_dir' is set by the runner"),
    (["--grid", "noise="], "a value is empty"),
    (["--grid", "xor_nus=[0.2"], "cannot read a value"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_input_is_refused_before_running(isolated, capsys, args, message):
    assert main(["run", "fig2", *args, "--out", str(isolated / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (isolated / "o").exists()


def test_grid_sweeps_list_valued_parameters(capsys):
    assert main(["params", "fig2", "--grid", "linear_nus=[0.2,0.4],[0.6]", "--out", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert "linear_nus:\n  - 0.2\n  - 0.4" in out and "linear_nus:\n  - 0.6" in out
    assert "custom--linear_nus=0.2+0.4" in out and "custom--linear_nus=0.6" in out
    with pytest.raises(ConfigError):
        plan("fig2", grid={"epoch": [1, 2]})


def test_papermill_by_hand_refuses_unknown_names_and_wrong_types(isolated):
    _, nb = find_figure("fig3a")
    for params, message in ((dict(epochz=3), "unknown parameter(s) ['epochz']"),
                            (dict(nus="[0.2, 0.4]"), "'nus' expects list[float], got '[0.2, 0.4]' (str)")):
        with pytest.raises(pm.PapermillExecutionError) as e:
            pm.execute_notebook(str(nb), str(isolated / "x.ipynb"), parameters=dict(params, out_dir=str(isolated / "o")),
                                kernel_name="python3", progress_bar=False)
        assert message in str(e.value)


def test_console_script_lists_figures_with_types():
    exe = [sys.executable, "-c", "from lottery_nb.cli import main; raise SystemExit(main(['list']))"]
    r = subprocess.run(exe, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "fig5_calibration" in r.stdout and "smoke" in r.stdout
    assert "widths: list[int] = [2, 8, 32]" in r.stdout


def test_several_figures_in_one_command(capsys):
    assert main(["params", "fig2", "fig3a", "table1", "--preset", "cpu", "--out", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert out.count("figure: ") == 3 and "figure: table1_full_vs_pruned" in out
    assert "levels: null" in out  # Table 1 at the cpu preset: the paper's level count per starting width
    assert main(["params", "fig2", "figZ", "--out", "/nonexistent"]) == 2
    assert "unknown figure 'figZ'" in capsys.readouterr().err


def test_params_estimate_says_what_a_run_would_train_and_trains_nothing(isolated, capsys):
    out, store = isolated / "out", isolated / "st"
    assert main(["params", "fig2", "--out", str(out), "--store", str(store), "--estimate", "--workers", "2"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("estimate:")]
    assert len(line) == 1 and "trajectories" in line[0] and "on 2 workers" in line[0], line
    assert not (store.exists() and any(store.iterdir())) and not out.exists()
    # costed for a GPU this machine may lack: another device type, other hours
    assert main(["params", "fig2", "--out", str(out), "--store", str(store), "--estimate", "--on", "cuda"]) == 0
    gpu = [l for l in capsys.readouterr().out.splitlines() if l.startswith("estimate:")]
    assert len(gpu) == 1 and "on a cuda in one process" in gpu[0] and gpu[0] != line[0], gpu


def test_a_timed_out_cell_is_reported_in_one_line_with_its_index(tmp_path):
    import nbformat
    from lottery_nb.runner import Run, execute
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("import time\ntime.sleep(60)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    res = execute(Run("slow", path, "t", tmp_path / "out" / "t", {}), timeout=3, show=False)
    assert not res["ok"] and "\n" not in res["error"], res
    # papermill puts its injected-parameters cell first, so the sleeping cell is cell 2 of the executed notebook
    assert res["error"].startswith("cell 2: CellTimeoutError: A cell timed out"), res["error"]


def test_a_store_linked_into_the_project_is_shown_inside_it(tmp_path, monkeypatch):
    import importlib
    runner_plan = importlib.import_module("lottery_nb.runner.plan")  # the package's `plan` is a function
    root, away = tmp_path / "project", tmp_path / "away"
    (root / "outputs").mkdir(parents=True)
    away.mkdir()
    (root / "outputs" / "store").symlink_to(away)
    monkeypatch.setattr(runner_plan, "project_root", lambda: root)
    assert runner_plan.shown(root / "outputs" / "store") == "outputs/store"  # not the link's target
    assert runner_plan.shown(root / "outputs" / "x") == "outputs/x"
    assert runner_plan.shown(away / "y") == str((away / "y").resolve())
