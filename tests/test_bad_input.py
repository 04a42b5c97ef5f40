"""The bad-input catalogue: every case is refused before any compute, with a message naming the parameter,
the value and what is allowed; the CLI exits 2 without a traceback and creates nothing."""
import importlib
import os

import pytest
import torch

from lottery_nb.analysis import best_pruned, mean_rows
from lottery_nb.cli import main
from lottery_nb.core import ConfigError, get_device
from lottery_nb.imp import Sweep, check_memory, conv_config, imp_config, run_imp

CLI = [  # (arguments after `run`, message)
    (["fig9"], "unknown figure 'fig9'"),
    (["fig"], "figure 'fig' is ambiguous"),
    (["fig2", "--preset", "nope"], "unknown preset 'nope'"),
    (["fig2", "--set", "widht=3"], "unknown parameter(s) ['widht']"),
    (["fig2", "--set", "widths=8"], "'widths' expects list[int], got 8 (int); write a list, e.g. [8]"),
    (["fig2", "--set", "widths=foo"], "'widths' expects list[int], got 'foo' (str)"),
    (["fig2", "--set", "widths=[2,0]"], "'widths' must lie in [1, inf), got [2, 0]"),
    (["fig2", "--set", "widths=[]"], "'widths' needs at least one value"),
    (["fig2", "--set", "starts=[2.5]"], "'starts' expects list[int], got [2.5]"),
    (["fig2", "--set", "epochs=2.5"], "'epochs' expects int, got 2.5 (float)"),
    (["fig2", "--set", "epochs=0"], "'epochs' must lie in [1, inf), got 0"),
    (["fig2", "--set", "epochs=true"], "'epochs' expects int, got True (bool)"),
    (["fig2", "--set", "replicates=0"], "'replicates' must lie in [1, inf), got 0"),
    (["fig2", "--set", "noise=1.5"], "'noise' must lie in [0, 1), got 1.5"),
    (["fig2", "--set", "noise=-0.1"], "'noise' must lie in [0, 1), got -0.1"),
    (["fig2", "--set", "tau=abc"], "'tau' expects float, got 'abc' (str)"),
    (["fig2", "--set", "tau=2"], "'tau' must lie in [0, 1], got 2"),
    (["fig2", "--set", "rule=foo"], "'rule' must be one of ['paper', 'argmin'], got 'foo'"),
    (["fig2", "--set", "n_train=1"], "'n_train' must lie in [2, inf), got 1"),
    (["fig2", "--set", "linear_nus=[0]"], "'linear_nus' must lie in (0, inf), got [0]"),
    (["fig2", "--set", "xor_nus=0.6"], "'xor_nus' expects list[float], got 0.6 (float)"),
    (["fig2", "--set", "linear_nus=[0.2, a]"], "'linear_nus' expects list[float], got [0.2, 'a']"),
    (["fig2", "--set", "min_params=-1"], "'min_params' must lie in [0, inf), got -1"),
    (["fig2", "--set", "levels=-2"], "'levels' must lie in [0, inf), got -2"),
    (["fig2", "--set", "device=tpu"], "unknown device 'tpu'; expected 'cpu', 'cuda' or 'cuda:N'"),
    (["fig2", "--set", "out_dir=x"], "parameter 'out_dir' is set by the runner; use --out and --store"),
    (["fig2", "--set", "store_dir=x"], "parameter 'store_dir' is set by the runner"),
    (["fig2", "--set", "epochs"], "--set expects NAME=VALUE, got 'epochs'"),
    (["fig2", "--set", "=3"], "--set expects NAME=VALUE, got '=3'"),
    (["fig2", "--grid", "noise="], "--grid 'noise=': a value is empty"),
    (["fig2", "--grid", "noise=0.1,,0.2"], "a value is empty"),
    (["fig2", "--grid", "xor_nus=[0.2"], "cannot read a value"),
    (["fig2", "--grid", "epochs=1,x"], "'epochs' expects int, got 'x' (str)"),
    (["fig2", "--grid", "widht=1,2"], "unknown parameter(s) ['widht']"),
    (["fig5", "--set", "width=0"], "'width' must lie in [1, inf), got 0"),
    (["fig5", "--set", "n_bins=0"], "'n_bins' must lie in [1, inf), got 0"),
    (["fig5", "--set", "linear_nu=[0.2]"], "'linear_nu' expects float, got [0.2] (list)"),
    (["fig3a", "--set", "nus=[0.4,-1]"], "'nus' must lie in (0, inf), got [0.4, -1]"),
    (["fig3b", "--set", "compile=fast"], "'compile' must be one of ['off', 'default', 'reduce-overhead'], got 'fast'"),
    (["fig4b", "--set", "fuse=0"], "'fuse' must lie in [1, inf), got 0"),
    (["fig1", "--set", "cifar_precision=fp16"], "'cifar_precision' must be one of ['fp32', 'bf16'], got 'fp16'"),
    (["fig1", "--set", "cifar_memory_format=nhwc"], "'cifar_memory_format' must be one of ['contiguous', 'channels_last']"),
    (["fig2", "--grid", "noise=0.2,0.2"], "--grid 'noise' repeats a value: [0.2, 0.2]"),
]


@pytest.mark.parametrize("args, message", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli_refuses_before_running(isolated, capsys, args, message):
    out = isolated / "o"
    assert main(["run", *args, "--out", str(out), "--store", str(isolated / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists() and not (isolated / "s").exists()


@pytest.mark.parametrize("option", ["--out", "--store"])
def test_cli_refuses_an_empty_folder_name(isolated, capsys, option):
    args = ["run", "fig2", "--out", str(isolated / "o"), "--store", str(isolated / "s")]
    args[args.index(option) + 1] = ""
    assert main(args) == 2
    assert f"{option} '' names no folder" in capsys.readouterr().err
    assert not (isolated / "o").exists() and not (isolated / "s").exists()


def test_a_preset_naming_no_figure_is_refused(tmp_path, monkeypatch, capsys):
    plan = importlib.import_module("lottery_nb.runner.plan")  # the module, not the function the package exports
    f = tmp_path / "typo.yaml"
    f.write_text("figures:\n  fig2_double_descent: {params: {epochs: 2}}\n  fig2_double_decent: {params: {epochs: 2}}\n")
    monkeypatch.setattr(plan, "presets", lambda: {"typo": f})
    assert main(["run", "fig2", "--preset", "typo", "--out", str(tmp_path / "o")]) == 2
    assert "preset 'typo' names no figure ['fig2_double_decent']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cli_refuses_cuda_without_a_gpu(isolated, capsys):
    assert main(["run", "fig2", "--set", "device=cuda", "--out", str(isolated / "o")]) == 2
    assert "device 'cuda' requested but CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--out", "--store"])
def test_cli_refuses_a_file_for_a_folder(isolated, capsys, option):
    f = isolated / "a_file"
    f.write_text("")
    args = ["run", "fig2", "--out", str(isolated / "o"), "--store", str(isolated / "s")]
    args[args.index(option) + 1] = str(f)
    assert main(args) == 2
    assert f"{option} {f} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_cli_refuses_a_read_only_out(isolated, capsys):
    ro = isolated / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert main(["run", "fig2", "--out", str(ro / "x")]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_finished_run(isolated, capsys):
    (isolated / "o" / "fig2_double_descent" / "smoke").mkdir(parents=True)
    assert main(["run", "fig2", "--preset", "smoke", "--out", str(isolated / "o")]) == 2
    assert "holds a finished run; pass --force to replace it" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["run", "fig2", "--timeout", "0"], ["bench", "--replicates", "0"],
                                  ["bench", "--replicates", "x"]])
def test_argument_types_are_refused_by_the_parser(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


LIBRARY = [
    (lambda: imp_config("cifar", 4), "unknown dataset 'cifar'"),
    (lambda: imp_config("linear", 0), "width must be an integer >= 1, got 0"),
    (lambda: imp_config("linear", 4, data=dict(sigma=-1)), "sigma must be a number in (0, None], got -1"),
    (lambda: imp_config("linear", 4, data=dict(n_train=1)), "n_train must be an integer >= 2, got 1"),
    (lambda: imp_config("linear", 4, data=dict(noise_mode="x")), "unknown noise_mode 'x'"),
    (lambda: imp_config("linear", 4, data=dict(noise=1.0)), "noise must be a number in [0, 1), got 1.0"),
    (lambda: imp_config("linear", 4, data=dict(foo=1)), "unknown data parameter(s) ['foo']"),
    (lambda: imp_config("xor", 4, data=dict(nu=0)), "nu must be a number in (0, None], got 0"),
    (lambda: imp_config("linear", 4, data=dict(dim=1)), "dim must be an integer >= 2, got 1"),
    (lambda: imp_config("linear", 4, train=dict(milestones=5)), "milestones must be a list of epochs, got 5"),
    (lambda: imp_config("linear", 4, train=dict(milestones=["a"])), "milestone must be an integer >= 1, got 'a'"),
    (lambda: imp_config("linear", 4, train=dict(lr=0)), "lr must be a number in (0, None], got 0"),
    (lambda: imp_config("linear", 4, train=dict(epoch=3)), "unknown train parameter(s) ['epoch']"),
    (lambda: imp_config("linear", 4, prune_rule="x"), "unknown prune_rule 'x'"),
    (lambda: imp_config("linear", 4, prune_fraction=1.5), "prune_fraction must be a number in (0, 1), got 1.5"),
    (lambda: imp_config("mnist", 4, data=dict(n_train=0)), "n_train must be an integer >= 1, got 0"),
    (lambda: get_device("tpu"), "unknown device 'tpu'"),
    (lambda: check_memory([imp_config("linear", 10**8)], torch.device("cpu")), "linear_nu0.2_fcn2_w100000000_r0"),
    (lambda: best_pruned([dict(level=0, train_error=0.1, test_error=0.2, counted=5)], "mode"), "unknown rule 'mode'"),
    (lambda: run_imp([imp_config("linear", 4)], -1), "levels must be an integer >= 0, got -1"),
    (lambda: Sweep("linear", [0], [4]), "width must be an integer >= 1, got 0"),
    (lambda: Sweep("cifar10", [], [2], 3, 1, None, conv_config({}, fuse=2)), "fuse 2 must divide replicates 3"),
    (lambda: imp_config("cifar10", 2, train=dict(compile="max")), "unknown compile 'max'"),
    (lambda: imp_config("mnist", 4, train=dict(compile="default")), "compile 'default': FCNs train in the bank"),
    (lambda: imp_config("mnist", 4, data=dict(n_train=10**9)), "n_train 1000000000 is more than the 60,000 train images"),
    (lambda: imp_config("cifar10", 4, data=dict(n_test=9000, removed=[8, 9])), "n_test 9000 is more than the 8,000 test"),
    (lambda: run_imp([imp_config("linear", 4, data=dict(n_train=10**9))], 1), "the largest dataset that of linear_nu0.2"),
    (lambda: mean_rows([dict(width=4, level=0, replicate=0), dict(width=4, level=1, replicate=0),
                        dict(width=4, level=0, replicate=1)]), "hold different numbers of levels ({0: 2, 1: 1})"),
]


@pytest.mark.parametrize("call, message", LIBRARY, ids=[m for _, m in LIBRARY])
def test_library_refuses_with_a_named_error(tmp_path, monkeypatch, call, message):
    monkeypatch.setenv("LOTTERY_NB_STORE", str(tmp_path / "store"))
    with pytest.raises(ConfigError) as e:
        call()
    assert message in str(e.value)
    assert not (tmp_path / "store").exists()


def test_the_catalogue_has_at_least_forty_cases():
    assert len(CLI) + len(LIBRARY) + 8 >= 40


def _idx(tmp_path, n_train=20, n_labels=20):
    import numpy as np
    from lottery_nb.data import write_idx
    g = np.random.default_rng(0)
    x, y = g.integers(0, 256, (n_train, 28, 28)), g.integers(0, 10, n_labels)
    return write_idx(tmp_path, "mnist", x, y, x[:10], y[:10])


@pytest.mark.parametrize("damage, message", [
    (lambda raw: (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:-1]),
     "train-images-idx3-ubyte is truncated or damaged: its header promises 15,680 values"),
    (lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(b"<html>not found</html>"),
     "t10k-labels-idx1-ubyte is not an IDX file of bytes"),
    (None, "train-labels-idx1-ubyte has 15 labels for the 20 images of train-images-idx3-ubyte"),
])
def test_damaged_mnist_files_are_named_before_training(tmp_path, damage, message):
    from lottery_nb.data import mnist_dataset
    raw = _idx(tmp_path, n_labels=20 if damage else 15)
    if damage: damage(raw)
    with pytest.raises(ConfigError) as e:
        mnist_dataset(tmp_path)
    assert message in str(e.value) and str(raw) in str(e.value)


def test_the_memory_check_counts_the_process_limit(monkeypatch):
    plan = importlib.import_module("lottery_nb.imp.plan")
    used = int(open("/proc/self/statm").read().split()[0]) * plan.resource.getpagesize()
    monkeypatch.setattr(plan.resource, "getrlimit", lambda _: (used + 2**27, plan.resource.RLIM_INFINITY))  # 128 MiB left
    assert plan.free_memory(torch.device("cpu")) <= 2**27
    check_memory([imp_config("linear", 100)], torch.device("cpu"))  # a few MiB fit
    with pytest.raises(ConfigError, match="free to this process on cpu"):
        check_memory([imp_config("linear", 10**5)], torch.device("cpu"))  # about 0.23 GiB do not


def test_damaged_data_is_refused_before_any_run_folder_exists(tmp_path):
    raw = _idx(tmp_path / "data", n_labels=15)
    with pytest.raises(ConfigError, match="has 15 labels for the 20 images"):
        run_imp([imp_config("mnist", 4, data=dict(n_train=10, n_test=5), train=dict(epochs=1))], 1, tmp_path / "store",
                data_root=tmp_path / "data", progress=False)
    assert not (tmp_path / "store").exists() and raw.exists()
