"""Training cells with extra per-step inputs: the tasks that provide them (sunspots_gaps' `dt`,
copy_episodes' `reset`), the model passing them by name (and drawing zoneout masks), exact resume,
the errors for what no task provides, and the arena on those tasks.

Short seeded runs on the numba backend (CPU), tiny hidden sizes."""

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from lstmc import arena, tasks
from lstmc.train import TrainConfig, build_model, count_params, train
from lstmc.train.inputs import ZONEOUT, input_plan

TLSTM, EPISODIC, ZONEOUT_LSTM = "examples/tlstm.cell", "examples/episodic_gru.cell", "examples/zoneout_lstm.cell"
SMALL = dict(progress=False, hidden=8, batch=16, eval_every=5)
EP_LEN = 24            # a short copy_episodes: 3 episodes of at least 7 steps, 3 spare steps


def _fresh(name, **kw):
    tasks._cache.clear()
    return tasks.get_task(name, **kw)


# ------------------------------------------------------------------------------------------ tasks

def test_the_tasks_declare_what_they_provide():
    for name, provided in tasks.TASK_INPUTS.items():
        t = tasks.get_task(name)
        assert tuple(t.input_widths()) == provided
        for split in ("train", "val", "test"):
            for u in provided:
                v = t.inputs_data[split][u]
                assert v.dtype == torch.float32 and v.shape == t.data[split][0].shape[:2]
    assert tasks.get_task("adding").input_widths() == {} and tasks.get_task("adding").batch_inputs("train", [0]) == {}


@pytest.mark.parametrize("name", list(tasks.TASK_INPUTS))
def test_the_data_and_inputs_are_fixed(name):
    a, b = _fresh(name), _fresh(name)
    for split in ("train", "val", "test"):
        for u, v in zip(a.data[split], b.data[split]):
            assert torch.equal(u, v)
        assert all(torch.equal(a.inputs_data[split][k], b.inputs_data[split][k]) for k in a.inputs_data[split])
        assert a.baseline(split) == b.baseline(split)


def test_sunspots_gaps_reads_observed_years_and_their_gaps():
    t = tasks.get_task("sunspots_gaps")
    s = tasks._sunspot_series()
    mu, sd = t.norm
    assert 0.5 < len(t.years) / len(s) < 0.7 and len(t.years) < len(s)      # irregular: years dropped
    sizes = [t.size(k) for k in ("train", "val", "test")]
    assert min(sizes) >= 25 and t.seq_len() == 20
    idx = [t.index[k] for k in ("train", "val", "test")]
    assert max(idx[0]) < min(idx[1]) and max(idx[1]) < min(idx[2])        # chronological by predicted year
    assert sum(len(set(i.tolist())) for i in idx) == sum(sizes)           # no predicted year twice
    for split in ("train", "val", "test"):
        x, y = t.batch(split, np.arange(t.size(split)))
        dt = t.batch_inputs(split, np.arange(t.size(split)))["dt"]
        assert x.shape == (t.size(split), 20, 1) and y.shape == (t.size(split), 1) and dt.shape == x.shape[:2]
        assert float(dt.min()) >= 1 and float(dt.max()) > 1               # gaps in years, some longer than 1
        last = t.index[split] - 1                                         # the window's last observed year
        assert np.isin(last, t.years).all()
        assert np.allclose(x[:, -1, 0].numpy() * sd + mu, s[last], atol=1e-3)
        assert np.allclose(y[:, 0].numpy() * sd + mu, s[t.index[split]], atol=1e-3)
        # walking back by the gaps from the last year lands on the observed years the window reads
        first = last - dt[:, 1:].sum(1).numpy().astype(int)
        assert np.isin(first, t.years).all()
        assert np.allclose(x[:, 0, 0].numpy() * sd + mu, s[first], atol=1e-3)
    persistence = np.sqrt(np.mean((s[t.index["test"]] - s[t.index["test"] - 1]) ** 2))
    assert t.baseline("test") == pytest.approx(persistence) and t.baseline("test") > 10
    assert abs(float(t.data["train"][0].mean())) < 0.3                   # normalised with training years


def test_copy_episodes_marks_each_episode_and_targets_its_first_symbols():
    t = _fresh("copy_episodes", length=EP_LEN, n_train=500, n_val=100, n_test=100)
    K, E, S = 3, 3, 8
    x, y = t.batch("train", np.arange(500))
    reset = t.batch_inputs("train", np.arange(500))["reset"]
    assert x.shape == y.shape == reset.shape == (500, EP_LEN)
    assert torch.all(reset[:, 0] == 1) and torch.all(reset.sum(1) == E)
    assert torch.all((x == S + 1).sum(1) == E) and int(x.min()) >= 1     # E delimiters, no blank input
    for r in range(50):
        starts = torch.nonzero(reset[r]).flatten().tolist()
        delims = torch.nonzero(x[r] == S + 1).flatten().tolist()
        recall = []
        for a, d, end in zip(starts, delims, starts[1:] + [EP_LEN]):
            assert a + K <= d and d + K < end                           # in its episode, K steps to recall
            assert torch.equal(y[r, d + 1:d + 1 + K], x[r, a:a + K])    # the episode's first K symbols
            recall += range(d + 1, d + 1 + K)
        off = [i for i in range(EP_LEN) if i not in recall]
        assert torch.all(y[r, off] == 0)
    assert len({tuple(torch.nonzero(reset[r]).flatten().tolist()) for r in range(500)}) == 10   # every split of 3 spare steps
    assert t.baseline("test") == pytest.approx(E * K * math.log(S) / EP_LEN)


def test_copy_episodes_splits_share_no_sequence():
    t = tasks.get_task("copy_episodes")
    rows = []
    for split in ("train", "val", "test"):
        both = torch.cat([t.data[split][0].double(), t.inputs_data[split]["reset"].double()], dim=1)
        rows.append({r.tobytes() for r in both.numpy()})
        assert len(rows[-1]) == t.size(split)
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


# ---------------------------------------------------------------------------------------- training

@pytest.mark.parametrize("cell, task", [
    (TLSTM, "sunspots_gaps"),
    (EPISODIC, "copy_episodes"),
    ("lstm", "sunspots_gaps"),                 # plain cells ignore the task's inputs...
    ("gru", "copy_episodes"),
])
def test_cells_train_on_the_tasks_with_inputs(cell, task):
    r = train(TrainConfig(cell=cell, task=task, steps=10, lr=1e-2, **SMALL))
    assert r.steps == 10 and all(math.isfinite(v) for v in r.train_losses)
    assert math.isfinite(r.val_metric) and math.isfinite(r.test_metric) and r.backend == "numba"
    assert r.baseline == tasks.get_task(task).baseline("test")


def test_plain_cells_read_the_same_data_and_no_inputs():
    t = tasks.get_task("copy_episodes")
    m = build_model(TrainConfig(cell="gru", task="copy_episodes", **SMALL).resolved(t), t)
    assert m.from_task == () and m.zoneout == {}
    x, _ = t.batch("val", [0, 1])
    assert torch.equal(m(x), m(x, t.batch_inputs("val", [0, 1])))      # ...which are not passed


def test_the_inputs_change_what_the_cell_computes():
    t = tasks.get_task("sunspots_gaps")
    torch.manual_seed(0)
    m = build_model(TrainConfig(cell=TLSTM, task="sunspots_gaps", **SMALL).resolved(t), t).eval()
    assert m.from_task == ("dt",)
    x, _ = t.batch("val", [0, 1, 2])
    dt = t.batch_inputs("val", [0, 1, 2])["dt"]
    with torch.no_grad():
        assert not torch.allclose(m(x, {"dt": dt}), m(x, {"dt": dt * 10}))
    with pytest.raises(ValueError, match=r"the cell reads input dt: call model\(x, inputs="):
        m(x)


@pytest.mark.parametrize("cell, task", [(TLSTM, "sunspots_gaps"), (ZONEOUT_LSTM, "copy_episodes")])
def test_resume_after_stop_at_equals_an_uninterrupted_run(tmp_path, cell, task):
    """The inputs are data and the zoneout masks come from the seeded RNG the checkpoint restores:
    losses identical, bit for bit, and --validate (eval mode, no random numbers) disturbs nothing."""
    cfg = TrainConfig(cell=cell, task=task, steps=12, **{**SMALL, "eval_every": 4})
    full = train(cfg)
    part = train(cfg, out=str(tmp_path), stop_at=5, validate=3)
    assert part.interrupted and part.train_losses == full.train_losses[:5]
    rest = train(cfg, out=str(tmp_path), resume=True)
    assert rest.steps == 12 and rest.train_losses == full.train_losses
    assert [h["val_metric"] for h in rest.history] == [h["val_metric"] for h in full.history]
    assert rest.test_metric == full.test_metric
    assert part.validations and part.validations[-1]["max_diff"] < 1e-4
    other = train(cfg, seed=1)
    assert other.train_losses != full.train_losses                     # the seed matters (masks, weights)


def test_the_model_draws_zoneout_masks_in_training_and_uses_their_mean_in_eval():
    t = tasks.get_task("sunspots")
    m = build_model(TrainConfig(cell=ZONEOUT_LSTM, task="sunspots", **{**SMALL, "hidden": 32}).resolved(t), t)
    assert m.from_task == () and m.zoneout == ZONEOUT == {"keep_c": 0.5, "keep_h": 0.05}
    x = torch.zeros(64, 20, 1)
    torch.manual_seed(3)
    a = m.train().cell_inputs(x, {})
    b = m.cell_inputs(x, {})
    torch.manual_seed(3)
    assert all(torch.equal(a[k], v) for k, v in m.cell_inputs(x, {}).items())   # from the seeded RNG
    for u, z in ZONEOUT.items():
        assert a[u].shape == (64, 20, 32) and set(a[u].unique().tolist()) <= {0.0, 1.0}
        assert abs(float(a[u].mean()) - z) < 0.02 and not torch.equal(a[u], b[u])
    state = torch.get_rng_state()
    e = m.eval().cell_inputs(x, {})
    assert torch.equal(torch.get_rng_state(), state)                   # evaluation draws nothing
    assert all(torch.all(e[u] == z) for u, z in ZONEOUT.items())


# ------------------------------------------------------------------------------------------ errors

TINY_INPUT = "cell needs_u\ninput u\nstate h\nh' = tanh(W @ x + U @ h + u * b)\n"
TINY_H = "cell needs_mask\ninput mask[H]\nstate h\nh' = mask * h + (1 - mask) * tanh(W @ x + U @ h + b)\n"


@pytest.mark.parametrize("cell, task, message", [
    (TLSTM, "adding", "cell tlstm reads input dt, which task adding does not provide: train it on sunspots_gaps, "
                      "which provides dt"),
    (EPISODIC, "sunspots_gaps", "cell episodic_gru reads input reset, which task sunspots_gaps does not provide: "
                                "train it on copy_episodes, which provides reset"),
    (TINY_INPUT, "copy_episodes", "cell needs_u reads input u, which task copy_episodes does not provide: no "
                                  "built-in task provides u (sunspots_gaps provides dt; copy_episodes provides reset"),
    (TINY_H, "adding", "cell needs_mask reads input mask[H], which task adding does not provide: no built-in"),
    ("examples/conditioned_lstm.cell", "sunspots_gaps",
     "cell conditioned_lstm reads input w[K] (its size K is the width of the task's w), which task sunspots_gaps "
     "does not provide"),
])
def test_what_no_task_provides_is_a_one_line_error(cell, task, message):
    t = tasks.get_task(task)
    with pytest.raises(ValueError) as e:
        build_model(TrainConfig(cell=cell, task=task, **SMALL).resolved(t), t)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not provide"):
        train(TrainConfig(cell=cell, task=task, steps=1, **SMALL))


def test_a_sized_input_takes_its_size_from_the_task():
    base = tasks.get_task("sunspots_gaps")
    g = torch.Generator().manual_seed(0)
    w = {k: {"w": torch.randn(base.size(k), base.seq_len(), 3, generator=g)} for k in ("train", "val", "test")}
    t = dataclasses.replace(base, name="with_w", inputs_data=w)
    cfg = TrainConfig(cell="examples/conditioned_lstm.cell", task="sunspots_gaps", **SMALL).resolved(t)
    m = build_model(cfg, t)
    assert m.rnn.sizes == {"K": 3} and m.from_task == ("w",)
    assert m.rnn.cell_params()["V_i"].shape == (8, 3)
    x, _ = t.batch("train", [0, 1])
    assert m(x, t.batch_inputs("train", [0, 1])).shape == (2, 1)
    flat = dataclasses.replace(base, name="flat_w", inputs_data={k: {"w": v["w"][..., 0]} for k, v in w.items()})
    with pytest.raises(ValueError, match=r"reads input w\[K\], but task flat_w's w is \[N, T\]"):
        input_plan("examples/conditioned_lstm.cell", flat)


# ------------------------------------------------------------------------- states of their own size

@pytest.mark.parametrize("kw,P", [({}, 4), ({"sizes": {"P": 3}}, 3),
                                  ({"sizes": {"P": 5}, "layers": 2, "bidirectional": True}, 5)],
                         ids=["default-half-hidden", "size-P-3", "2-layers-bidirectional"])
def test_lstmp_trains_with_its_projection_size(kw, P):
    """lstmp's P is --size P=N (default hidden // 2): the recurrent layers output P per direction and
    the head reads them; the run trains (a finite loss that falls on adding)."""
    t = tasks.get_task("adding")
    cfg = TrainConfig(cell="lstmp", task="adding", steps=30, lr=0.01, **{**SMALL, **kw})
    m = build_model(cfg.resolved(t), t)
    dirs = 2 if kw.get("bidirectional") else 1
    assert m.rnn.sizes == {"P": P} and m.rnn.output_size == P and m.head.in_features == P * dirs
    assert m.rnn.cell_params()["W_hr"].shape == (P, 8)
    res = train(cfg)
    assert math.isfinite(res.test_metric) and np.mean(res.train_losses[-5:]) < np.mean(res.train_losses[:5])


@pytest.mark.parametrize("sizes,message", [
    ({"Q": 4}, "--size Q=4: cell lstmp declares the sizes P"),
    ({"P": 0}, "--size P: a positive integer, got 0"),
])
def test_bad_state_sizes_are_one_line_errors(sizes, message):
    t = tasks.get_task("adding")
    with pytest.raises(ValueError) as e:
        build_model(TrainConfig(cell="lstmp", task="adding", sizes=sizes, **SMALL).resolved(t), t)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="--size Q=4: cell lstm declares no sizes"):
        input_plan("lstm", t, 8, {"Q": 4})


def test_the_state_sizes_used_are_recorded_in_the_config():
    """resolved() writes the P a run uses, given or default, so `--resume --size P=4` after a run
    that took the default P=4 is the same run; a cell without such sizes keeps None."""
    t = tasks.get_task("adding")
    assert TrainConfig(cell="lstmp", task="adding", **SMALL).resolved(t).sizes == {"P": 4}
    assert TrainConfig(cell="lstmp", task="adding", sizes={"P": 4}, **SMALL).resolved(t).sizes == {"P": 4}
    assert TrainConfig(cell="lstmp", task="adding", sizes={"P": 3}, **SMALL).resolved(t).sizes == {"P": 3}
    assert TrainConfig(cell="lstm", task="adding", **SMALL).resolved(t).sizes is None


def test_size_option_of_the_command_line():
    from lstmc.train.cli import parse_sizes

    assert parse_sizes(["P=32", "K=3"]) == {"P": 32, "K": 3} and parse_sizes(None) is None
    for bad in ("P", "P=x", "=3", "P=0"):
        with pytest.raises(ValueError, match="write NAME=N with a positive whole number"):
            parse_sizes([bad])
    with pytest.raises(ValueError, match=r"--size P is given twice \(P=3 and P=4\)"):
        parse_sizes(["P=3", "P=4"])


# ------------------------------------------------------------------------------------------- arena

def test_arena_counts_the_parameters_the_model_has():
    for cell, task in ((TLSTM, "sunspots_gaps"), (EPISODIC, "copy_episodes"), ("lstm", "copy_episodes"),
                       ("lstmp", "adding")):
        t = tasks.get_task(task)
        m = build_model(TrainConfig(cell=cell, task=task, **SMALL).resolved(t), t)
        assert arena.model_param_count(cell, task, 8) == count_params(m)


def _arena(argv):
    p = argparse.ArgumentParser()
    arena.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["arena", *argv])
    return args.fn(args)


def test_arena_ranks_a_cell_that_resets_against_one_that_does_not(tmp_path, capsys):
    out = tmp_path / "a"
    assert _arena([EPISODIC, "gru", "--tasks", "copy_episodes", "--steps", "4", "--seeds", "1", "--hidden", "8",
                   "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "arena.json").read_text())
    assert {(e["cell"], e["task"]) for e in data["entries"]} == {("episodic_gru", "copy_episodes"),
                                                                 ("gru", "copy_episodes")}
    assert all(len(e["values"]) == 1 and math.isfinite(e["values"][0]) for e in data["entries"])
    assert "## copy_episodes — test ce" in capsys.readouterr().out


def test_arena_refuses_a_cell_that_cannot_read_a_task_before_training(tmp_path):
    with pytest.raises(ValueError, match="cell tlstm reads input dt, which task copy_episodes does not provide"):
        _arena([TLSTM, "lstm", "--tasks", "sunspots_gaps,copy_episodes", "--steps", "2", "--seeds", "1",
                "--out", str(tmp_path / "a"), "--no-progress"])
    assert not (tmp_path / "a" / "runs").exists()
