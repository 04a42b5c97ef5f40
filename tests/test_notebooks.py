"""Every notebook in nbs/ executed with nbdev's test_nb, and the notebooks in sync with the library."""
import filecmp
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 10


def _code(nb): return [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']


def test_no_notebook_imports_from_a_later_one():
    "Numbered notebooks build the library in import order: each imports only modules of itself or earlier notebooks."
    numbered = [nb for nb in NOTEBOOKS if re.match(r'\d{2}', nb.name)]
    maker = {}
    for nb in numbered:
        for m in re.finditer(r'#\|\s*default_exp\s+(\S+)', '\n'.join(_code(nb))):
            maker['lottery_nb.' + m.group(1).removesuffix('.__init__')] = nb.name
    late = [(nb.name, mod, maker[mod]) for nb in numbered for src in _code(nb)
            for mod in re.findall(r'(?:from|import)\s+(lottery_nb(?:\.\w+)*)', src)
            if mod in maker and maker[mod] > nb.name]
    assert not late, late


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "nbs")))
def test_notebook_runs(nb, isolated):
    # test_nb leaves IN_TEST set and changes the working directory; run it in a child process
    code = ("import sys; from pathlib import Path; from nbdev.test import test_nb; "
            "ok, _ = test_nb(Path(sys.argv[1]), do_print=False); sys.exit(0 if ok else 1)")
    r = subprocess.run([sys.executable, "-c", code, str(nb)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def _copy_project(dst):
    for name in ("nbs", "lottery_nb", "settings.ini", "pyproject.toml", "setup.py"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst / name)


def _nbdev(cmd, cwd):
    exe = Path(sys.executable).with_name(cmd)
    r = subprocess.run([str(exe)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def _changed(a, b, pattern):
    return [str(p.relative_to(a)) for p in sorted(a.rglob(pattern)) if not filecmp.cmp(p, b / p.relative_to(a), shallow=False)]


def test_library_is_exported_from_notebooks(tmp_path):
    _copy_project(tmp_path)
    _nbdev("nbdev_export", tmp_path)
    assert _changed(ROOT / "lottery_nb", tmp_path / "lottery_nb", "*.py") == [], "run nbdev_export and commit"
    new = {p.name for p in (tmp_path / "lottery_nb").glob("*.py")} - {p.name for p in (ROOT / "lottery_nb").glob("*.py")}
    assert not new, f"nbdev_export creates modules missing from the repository: {new}"


def test_notebooks_are_clean(tmp_path):
    _copy_project(tmp_path)
    _nbdev("nbdev_clean", tmp_path)
    assert _changed(ROOT / "nbs", tmp_path / "nbs", "*.ipynb") == [], "run nbdev_clean and commit"
