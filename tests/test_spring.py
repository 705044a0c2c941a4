"""SR momentum (SPRING, ``optimizer.momentum``): the formula, state, resume and config checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from distvmc import config
from distvmc.comm import SingleProcess
from distvmc.config import ConfigError
from distvmc.optimizers.sr import SR, Gradient

from conftest import cli

N, P = 40, 70  # fewer samples than parameters: the regime sample space (and SPRING) is for


def gradient(rng, extra=False):
    o = rng.standard_normal((N, P)) * np.geomspace(0.02, 2.0, P)
    e = rng.standard_normal(N)
    return Gradient(o=o - o.mean(0), e=e - e.mean(), n=float(N),
                    extra=rng.standard_normal(P) * 0.1 if extra else None)


def sr(solver, momentum=None, **kw):
    fields = dict(solver=solver, cg_tol=1e-13, cg_maxiter=5000, cg_precondition="none", **kw)
    if momentum is not None:
        fields["momentum"] = momentum
    return SR(SimpleNamespace(**fields), SingleProcess(), P, log=None)


def spring_numpy(g, shift, mu, prev):
    """SPRING's step written out: A^T (A A^T + eps)^-1 (eps' - mu A prev) + mu prev, with
    A = O / sqrt(n), eps' = E / sqrt(n); for an extra force, (S + eps) d = F + eps mu prev."""
    a = g.o / np.sqrt(g.n)
    if g.extra is None:
        rhs = g.e / np.sqrt(g.n) - mu * a @ prev
        return a.T @ np.linalg.solve(a @ a.T + shift * np.eye(len(rhs)), rhs) + mu * prev
    f = a.T @ (g.e / np.sqrt(g.n)) + g.extra + shift * mu * prev
    return np.linalg.solve(a.T @ a + shift * np.eye(P), f)


def test_momentum_zero_is_bitwise_plain_sr_and_keeps_no_state(rng):
    for extra in (False, True):
        g1, g2 = gradient(rng, extra), gradient(rng, extra)
        for solver in ("dense", "cg", "samplespace"):
            plain, zero = sr(solver), sr(solver, momentum=0.0)
            for g in (g1, g2):
                d0, i0 = plain.direction(g, 1e-3)
                d1, i1 = zero.direction(g, 1e-3)
                np.testing.assert_array_equal(d1, d0)
                assert i1 == i0
            if solver != "cg":  # cg keeps its warm start, as before
                assert zero.state() == plain.state() == {}


@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("solver", ["samplespace", "dense", "cg"])
def test_momentum_direction_is_the_spring_formula(solver, extra, rng):
    g = gradient(rng, extra)
    prev = rng.standard_normal(P)
    for mu, shift in ((0.9, 1e-3), (0.5, 1e-2), (0.99, 1e-4)):
        s = sr(solver, momentum=mu)
        s.set_state({"previous_delta": prev})
        d, info = s.direction(g, shift)
        want = spring_numpy(g, shift, mu, prev)
        assert np.linalg.norm(d - want) <= 1e-10 * np.linalg.norm(want), (solver, mu, info)
        assert info["momentum"] is True
        # the momentum made a difference, and the new delta is the next step's previous
        plain, _ = sr(solver).direction(g, shift)
        assert np.linalg.norm(d - plain) > 1e-3 * np.linalg.norm(plain)
        np.testing.assert_array_equal(s.state()["previous_delta"], d)


def test_explicit_metric_momentum_is_the_same_equation(rng):
    s_mat = rng.standard_normal((P, 30))
    metric, force, prev = s_mat @ s_mat.T / 30, rng.standard_normal(P), rng.standard_normal(P)
    s = sr("auto", momentum=0.8)
    s.set_state({"previous_delta": prev})
    d, _ = s.direction(Gradient(force=force, metric=metric), 1e-2)
    want = np.linalg.solve(metric + 1e-2 * np.eye(P), force + 1e-2 * 0.8 * prev)
    np.testing.assert_allclose(d, want, rtol=1e-10, atol=1e-12)


def test_first_step_is_plain_sr_then_the_previous_delta_is_used(rng):
    g1, g2 = gradient(rng), gradient(rng)
    s = sr("samplespace", momentum=0.9)
    assert s.state() == {}
    d1, i1 = s.direction(g1, 1e-3)
    np.testing.assert_array_equal(d1, sr("samplespace").direction(g1, 1e-3)[0])
    assert i1["momentum"] is False
    d2, i2 = s.direction(g2, 1e-3)
    assert i2["momentum"] is True
    np.testing.assert_allclose(d2, spring_numpy(g2, 1e-3, 0.9, d1), rtol=1e-10, atol=1e-12)
    # a restored state repeats the step bit for bit (rewinds, step control, checkpoints)
    other = sr("samplespace", momentum=0.9)
    other.set_state({"previous_delta": d1})
    np.testing.assert_array_equal(other.direction(g2, 1e-3)[0], d2)
    # a non-finite previous delta is not used (plain SR step, never a NaN)
    bad = sr("samplespace", momentum=0.9)
    bad.set_state({"previous_delta": np.full(P, np.nan)})
    d3, i3 = bad.direction(g2, 1e-3)
    assert i3["momentum"] is False and np.all(np.isfinite(d3))


def test_a_samplespace_momentum_run_resumed_from_a_checkpoint_is_bitwise_the_uninterrupted_run(
        tmp_path):
    # delta_(k-1) is optimizer state: a run stopped after 4 iterations and resumed to 8 must
    # repeat the 8-iteration run bit for bit; and momentum changes the run (it is used).
    from distvmc.io import read_history

    base = ["wavefunction.factors.0.hidden=[8, 8]", "sampler.walkers=64",
            "sampler.thermalization=20", "sampler.sweeps_per_sample=3",
            "evaluation.samples=640", "evaluation.thermalization=5",
            "optimizer.solver=samplespace", "checkpoint.every=0"]
    full, part, plain = tmp_path / "full", tmp_path / "part", tmp_path / "plain"
    runs = [[*base, "optimizer.momentum=0.9", "optimizer.iterations=8", "--out", str(full)],
            [*base, "optimizer.momentum=0.9", "optimizer.iterations=4", "--out", str(part)],
            ["--resume", str(part), "optimizer.iterations=8"],
            [*base, "optimizer.iterations=8", "--out", str(plain)]]
    for args in runs:
        r = cli("run", *args, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b, c = read_history(str(full)), read_history(str(part)), read_history(str(plain))
    assert len(a) == len(b) == len(c) == 8
    for ra, rb in zip(a, b):
        assert ra["energy"] == rb["energy"] and ra["update_norm"] == rb["update_norm"], (ra, rb)
    # the same first two iterations (no previous delta at the first step), then different steps
    assert a[0]["update_norm"] == c[0]["update_norm"] and a[1]["energy"] == c[1]["energy"]
    assert a[1]["update_norm"] != c[1]["update_norm"]


@pytest.mark.parametrize("overrides, fragment", [
    (["optimizer.momentum=1"], "optimizer.momentum = 1.0: must be a number >= 0 and < 1"),
    (["optimizer.momentum=-0.5"], "optimizer.momentum = -0.5: must be a number >= 0 and < 1"),
    (["optimizer.type=adam", "optimizer.momentum=0.9"],
     "optimizer.momentum = 0.9 is SR's (SPRING) momentum but optimizer.type = 'adam'"),
])
def test_momentum_config_errors_are_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        config.load(None, overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_momentum_config_accepts_every_sr_solver():
    for solver in ("auto", "dense", "cg", "samplespace"):
        assert config.load(None, [f"optimizer.solver={solver}",
                                  "optimizer.momentum=0.9"]).optimizer.momentum == 0.9
    assert config.load(None, ["optimizer.type=adam"]).optimizer.momentum == 0.0
