"""The figure runner: one figure end to end through papermill and the CLI, and its refusals."""
import json
import subprocess
import sys

import papermill as pm
import pytest

from conftest import ROOT
from lottery_nb.cli import find_figure, load_preset, main, notebook_parameters, plan_runs
from lottery_nb.core import ConfigError


def test_presets_name_only_declared_parameters():
    for preset in ("smoke", "cpu", "paper"):
        for fig, spec in load_preset(preset)["figures"].items():
            plan_runs(fig, preset)  # raises on an unknown parameter


def test_every_figure_has_smoke_defaults_and_paths_as_parameters():
    for fig in ("fig2", "fig3a", "fig5", "figS1"):
        name, nb = find_figure(fig)
        p = notebook_parameters(nb)
        assert {"out_dir", "store_dir", "device", "replicates", "epochs"} <= set(p), name
        assert p["out_dir"] == "None" and p["store_dir"] == "None"  # papermill reports defaults as source text


def test_run_a_figure_through_the_cli(isolated, capsys):
    out, store = isolated / "out", isolated / "st"
    assert main(["run", "fig3a", "--preset", "smoke", "--out", str(out), "--store", str(store), "--no-progress"]) == 0
    run_dir = out / "fig3a_effective_params" / "smoke"
    for f in ("fig3a_effective_params.ipynb", "fig3a.png", "fig3a.pdf", "metrics.json"):
        assert (run_dir / f).exists(), f
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["figure"] == "fig3a" and metrics["scale_notes"]
    assert metrics["parameters"]["out_dir"] == str(run_dir.resolve()) and metrics["parameters"]["epochs"] == "2"
    assert "1 of 1 runs succeeded" in capsys.readouterr().out


def test_unknown_parameter_is_refused_before_running(isolated, capsys):
    assert main(["run", "fig2", "--set", "widht=3", "--out", str(isolated / "o")]) == 2
    assert "unknown parameter(s) ['widht']" in capsys.readouterr().err
    assert not (isolated / "o").exists()
    with pytest.raises(ConfigError):
        plan_runs("fig2", grid={"epoch": [1, 2]})


def test_a_failing_run_is_reported_and_the_others_go_on(isolated, capsys):
    code = main(["run", "figS1", "--grid", "epochs=-1,1", "--out", str(isolated / "o"), "--store", str(isolated / "s"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 of 2 runs succeeded" in captured.out
    assert "ConfigError" in captured.err and "epochs must be" in captured.err and "cell" in captured.err


def test_papermill_by_hand_refuses_unknown_names(isolated):
    _, nb = find_figure("fig3a")
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(nb), str(isolated / "x.ipynb"), parameters=dict(epochz=3, out_dir=str(isolated / "o")),
                            kernel_name="python3", progress_bar=False)
    assert "unknown parameter(s) ['epochz']" in str(e.value)


def test_console_script_lists_figures():
    exe = [sys.executable, "-c", "from lottery_nb.cli import main; raise SystemExit(main(['list']))"]
    r = subprocess.run(exe, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "fig5_calibration" in r.stdout and "smoke" in r.stdout
