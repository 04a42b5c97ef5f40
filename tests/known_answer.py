"""A known answer: three short IMP trajectories (a Gaussian mixture and two MNIST-shaped FCNs on images made with integer
arithmetic only) whose stored metrics and weight digests are committed in `tests/data/known_answer.json`.

`python tests/known_answer.py` prints them as JSON; `--write` replaces the committed file. The test runs it in a fresh
process with the portable CPU arithmetic and one thread, so that the libraries read their settings before first use."""
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

EXPECTED = Path(__file__).parent / "data" / "known_answer.json"
KEYS = ("counted", "train_error", "test_error", "train_loss", "test_loss", "ece")


def images(g, templates, n):
    """`n` 28×28 images of 10 classes and their labels, in integers only: a class template blended with uniform noise."""
    y = g.integers(0, 10, n)
    return ((3 * templates[y] + g.integers(0, 256, (n, 28, 28))) // 4).astype(np.uint8), y


def digest(state):
    """SHA-256 of a state dict's tensors, in key order."""
    h = hashlib.sha256()
    for k in sorted(state): h.update(k.encode() + state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def known_answer(tmp):
    """The trajectories' stored numbers, by run name and level, and the CPU arithmetic they were computed with."""
    import torch
    from lottery_nb.core import arithmetic
    from lottery_nb.data import write_idx
    from lottery_nb.imp import imp_config, run_imp
    from lottery_nb.store import RunStore
    torch.set_num_threads(1)
    g = np.random.default_rng(0)
    templates = g.integers(0, 256, (10, 28, 28))
    write_idx(tmp / "data", "mnist", *images(g, templates, 500), *images(g, templates, 200))
    mix = dict(n_train=400, n_test=200)
    cfgs = [imp_config("xor", 12, data=mix, train=dict(epochs=3)),
            imp_config("mnist", 5, train=dict(epochs=6, batch_size=33, lr=0.01)),
            imp_config("mnist", 20, train=dict(epochs=6, batch_size=33, lr=0.01))]
    store = RunStore(tmp / "store")
    run_imp(cfgs, 3, store, data_root=tmp / "data", progress=False)
    out = {}
    for name, _ in store.runs():
        run = store.root / name
        for level in store.levels(run):
            m = store.level_metrics(run, level)
            state = store.state(run, level)
            out[f"{name}/{level}"] = {**{k: m[k] for k in KEYS}, "weights": None if state is None else digest(state["model"])}
    return dict(arithmetic=arithmetic(), threads=torch.get_num_threads(), levels=out)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d: got = known_answer(Path(d))
    text = json.dumps(got, indent=1, sort_keys=True) + "\n"
    if "--write" in sys.argv: EXPECTED.write_text(text)
    print(text, end="")
