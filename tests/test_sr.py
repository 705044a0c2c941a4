"""Stochastic reconfiguration: the solve, its fallbacks and the log-derivatives."""

import numpy as np
import pytest
import tensorflow as tf

from distvmc import config
from distvmc.comm import SingleProcess
from distvmc.optimizers.jacobian import LogDerivatives
from distvmc.optimizers.sr import SR, Gradient, solve_shifted
from distvmc.systems import build_system
from distvmc.wavefunctions import build_wavefunction


def small_problem(overrides=(), seed=0):
    cfg = config.load(None, ["wavefunction.factors.0.hidden=[5, 4]", *overrides])
    system = build_system(cfg)
    wf = build_wavefunction(cfg, system, seed=seed)
    return cfg, system, wf


def direction(cfg, wf, x, e, comm=None):
    """SR's direction for samples x with local energies e (one rank)."""
    o = LogDerivatives(wf)(x)
    g = Gradient(o=o - o.mean(0), e=e - e.mean(), n=len(e))
    sr = SR(cfg.optimizer, comm or SingleProcess(), wf.n_parameters)
    return sr.direction(g, cfg.optimizer.shift)


def test_log_derivatives_match_finite_differences(rng):
    _, _, wf = small_problem()
    x = rng.standard_normal((7, 1, 3))
    o = LogDerivatives(wf)(x)
    theta = wf.get_flat()
    assert o.shape == (7, theta.size)
    h = 1e-6
    fd = np.zeros_like(o)
    for k in range(theta.size):
        t = theta.copy()
        t[k] += h
        wf.set_flat(t)
        up = wf.log_abs(tf.constant(x)).numpy()
        t[k] -= 2 * h
        wf.set_flat(t)
        down = wf.log_abs(tf.constant(x)).numpy()
        fd[:, k] = (up - down) / (2 * h)
    wf.set_flat(theta)
    np.testing.assert_allclose(o, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("solver", ["dense", "samplespace", "cg"])
def test_sr_direction_equals_numpy_reference(solver, rng):
    cfg, _, wf = small_problem([f"optimizer.solver={solver}", "optimizer.shift=0.01",
                                "optimizer.cg_tol=1e-12", "optimizer.cg_maxiter=1000"])
    x = rng.standard_normal((50, 1, 3))
    e = rng.standard_normal(50)
    delta, info = direction(cfg, wf, x, e)
    assert info["solver"] == solver
    o = LogDerivatives(wf)(x)
    oc = o - o.mean(0)
    ec = e - e.mean()
    s = oc.T @ oc / 50
    f = oc.T @ ec / 50
    ref = np.linalg.solve(s + 0.01 * np.eye(len(f)), f)
    np.testing.assert_allclose(delta, ref, rtol=1e-8, atol=1e-10)


def test_sr_step_lowers_the_energy_along_the_gradient(rng):
    cfg, _, wf = small_problem()
    x = rng.standard_normal((64, 1, 3))
    e = rng.standard_normal(64)
    delta, _ = direction(cfg, wf, x, e)
    o = LogDerivatives(wf)(x)
    grad = 2 * (o - o.mean(0)).T @ (e - e.mean()) / 64
    assert grad @ delta > 0  # a descent direction: S + eps is positive definite


def test_singular_overlap_falls_back_and_stays_finite():
    a = np.zeros((4, 4))
    a[0, 0] = 1.0
    b = np.array([1.0, 0.0, 0.0, 0.0])
    x, how = solve_shifted(a, b, 0.0)  # exactly singular, no shift
    assert how == "eigh-pinv"
    np.testing.assert_allclose(x, [1.0, 0, 0, 0], atol=1e-12)
    # Indefinite by round-off: Cholesky fails, the raised shift succeeds.
    v = np.random.default_rng(0).standard_normal((6, 3))
    a = v @ v.T - 1e-9 * np.eye(6)
    x, how = solve_shifted(a, np.ones(6), 1e-10)
    assert how != "cholesky" and np.all(np.isfinite(x))


def test_sr_with_duplicate_parameters_direction_is_finite(rng):
    # All samples identical: O is constant, S = 0, F = 0 -> delta = 0, never NaN.
    cfg, _, wf = small_problem(["optimizer.shift=0"])
    x = np.repeat(rng.standard_normal((1, 1, 3)), 16, axis=0)
    e = np.full(16, -0.3)
    delta, info = direction(cfg, wf, x, e)
    assert np.all(np.isfinite(delta))
    np.testing.assert_allclose(delta, 0.0, atol=1e-12)


def test_samplespace_with_an_extra_force_equals_dense(rng):
    # The penalized excited-state objective adds a force outside the span of O^T:
    # the sample-space solver then uses the Woodbury form, which must give the dense delta.
    x = rng.standard_normal((30, 1, 3))
    e = rng.standard_normal(30)
    deltas = {}
    for solver in ("dense", "samplespace"):
        cfg, _, wf = small_problem([f"optimizer.solver={solver}", "optimizer.shift=0.01"])
        o = LogDerivatives(wf)(x)
        extra = np.random.default_rng(5).standard_normal(wf.n_parameters) * 0.1
        g = Gradient(o=o - o.mean(0), e=e - e.mean(), n=30, extra=extra)
        deltas[solver], info = SR(cfg.optimizer, SingleProcess(), wf.n_parameters).direction(g, 0.01)
        assert info["solver"] == solver
    assert wf.n_parameters > 30  # more parameters than samples: the case sample space is for
    np.testing.assert_allclose(deltas["samplespace"], deltas["dense"], rtol=1e-7, atol=1e-9)


def random_gradient(rng, n=80, p=60, extra=False):
    """Centred O (n, p) with columns of very different scales (as an MLP's layers)."""
    o = rng.standard_normal((n, p)) * np.geomspace(0.01, 3.0, p)
    e = rng.standard_normal(n)
    return Gradient(o=o - o.mean(0), e=e - e.mean(), n=n,
                    extra=rng.standard_normal(p) * 0.1 if extra else None)


def sr_for(solver, p, **kw):
    cfg = config.load(None, [f"optimizer.solver={solver}"]
                      + [f"optimizer.{k}={v}" for k, v in kw.items()])
    return SR(cfg.optimizer, SingleProcess(), p, log=None)


@pytest.mark.parametrize("precondition", ["jacobi", "none"])
@pytest.mark.parametrize("extra", [False, True])
def test_cg_gives_the_dense_direction_to_its_tolerance(precondition, extra, rng):
    g = random_gradient(rng, extra=extra)
    dense, _ = sr_for("dense", 60).direction(g, 1e-3)
    for tol in (1e-6, 1e-10):
        delta, info = sr_for("cg", 60, cg_tol=tol, cg_maxiter=5000,
                             cg_precondition=precondition).direction(g, 1e-3)
        assert info["cg_converged"] and info["cg_residual"] <= tol
        assert info["solve"].startswith("cg(")
        # |delta - dense| <= |(S + eps)^-1| |r| <= |r| / eps
        assert np.linalg.norm(delta - dense) <= tol * np.linalg.norm(2 * g.o.T @ g.e / g.n
                                                                      + (g.extra if extra else 0)) / 1e-3


def test_cg_is_warm_started_from_the_previous_direction_and_that_is_its_state(rng):
    g = random_gradient(rng)
    sr = sr_for("cg", 60, cg_tol=1e-8, cg_maxiter=5000)
    assert sr.state() == {}
    d1, i1 = sr.direction(g, 1e-3)
    assert not i1["cg_warm_start"] and i1["cg_iterations"] > 5
    saved = sr.state()
    np.testing.assert_array_equal(saved["previous_delta"], d1)
    d2, i2 = sr.direction(g, 1e-3)  # the same system again: the warm start is the answer
    assert i2["cg_warm_start"] and i2["cg_iterations"] <= 1
    # a restored state repeats the iteration bit for bit (rewinds, checkpoints)
    other = sr_for("cg", 60, cg_tol=1e-8, cg_maxiter=5000)
    other.set_state(saved)
    d3, i3 = other.direction(g, 1e-3)
    np.testing.assert_array_equal(d3, d2)
    other.set_state({})  # an SR state from before CG existed: a cold start
    assert other.previous is None


def test_cg_that_hits_its_iteration_cap_says_so_and_is_finite(rng):
    g = random_gradient(rng)
    delta, info = sr_for("cg", 60, cg_tol=1e-14, cg_maxiter=3).direction(g, 1e-6)
    assert info["solve"].startswith("cg not converged (3 it")
    assert not info["cg_converged"] and np.all(np.isfinite(delta))


def test_cg_with_no_shift_and_a_zero_metric_is_finite():
    # every sample identical: O = 0, F = 0, S = 0 and no shift -> delta = 0, never NaN
    g = Gradient(o=np.zeros((10, 5)), e=np.zeros(10), n=10)
    delta, info = sr_for("cg", 5, shift=0).direction(g, 0.0)
    np.testing.assert_array_equal(delta, 0.0)
    assert info["cg_converged"]


def test_auto_picks_dense_then_samplespace_then_cg():
    def chosen(p, n, size=1):
        sr = sr_for("auto", p)
        sr.comm = type("C", (), {"size": size, "is_root": True})()
        return sr.choose_solver(n)

    assert chosen(1000, 100) == "dense"  # P <= 2000
    assert chosen(5000, 1000) == "samplespace"  # one rank, few samples, more parameters
    assert chosen(5000, 4096) == "cg"  # cg's ~10 passes over O beat the 4096^2 kernel
    assert chosen(500, 400) == "dense"
    assert chosen(5000, 4096, size=2) == "cg"  # several ranks: P numbers per CG step


# -- the device path (optimizer.linear_algebra: device): O as a tf.Tensor ------------------
def on_device(g: Gradient) -> Gradient:
    """The same gradient with O and E as tf.Tensors (the device path; this CPU here)."""
    return Gradient(o=tf.constant(g.o), e=tf.constant(g.e), n=g.n, extra=g.extra)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("solver", ["dense", "cg", "samplespace"])
def test_every_solver_on_device_tensors_gives_the_host_direction(solver, extra, momentum, rng):
    for n, p in ((80, 60), (40, 60)):  # more samples than parameters, and fewer
        g = random_gradient(rng, n=n, p=p, extra=extra)
        prev = {"previous_delta": rng.standard_normal(p) * 0.3} if momentum else {}
        out = {}
        for where, grad in (("host", g), ("device", on_device(g))):
            sr = sr_for(solver, p, cg_tol=1e-12, cg_maxiter=5000, momentum=momentum)
            sr.set_state(prev)
            out[where], info = sr.direction(grad, 1e-3)
            assert isinstance(out[where], np.ndarray) and out[where].dtype == np.float64
            assert info["solve"].startswith("cg(" if solver == "cg" else "cholesky"), info
        rel = np.linalg.norm(out["device"] - out["host"]) / np.linalg.norm(out["host"])
        assert rel <= 1e-10, (solver, n, p, rel)
        assert np.linalg.norm(out["host"]) > 0


def test_device_cg_keeps_its_warm_start_on_the_host_and_repeats_it_bitwise(rng):
    g = on_device(random_gradient(rng))
    sr = sr_for("cg", 60, cg_tol=1e-8, cg_maxiter=5000)
    d1, i1 = sr.direction(g, 1e-3)
    assert isinstance(sr.state()["previous_delta"], np.ndarray)  # what a checkpoint keeps
    d2, i2 = sr.direction(g, 1e-3)
    assert i2["cg_warm_start"] and i2["cg_iterations"] <= 1
    other = sr_for("cg", 60, cg_tol=1e-8, cg_maxiter=5000)
    other.set_state({"previous_delta": d1})
    np.testing.assert_array_equal(other.direction(g, 1e-3)[0], d2)


def test_device_solve_falls_back_to_the_host_when_cholesky_fails():
    from distvmc.optimizers.linalg import ops_for

    ops = ops_for(tf.zeros([1]))
    a = np.zeros((4, 4))
    a[0, 0] = 1.0  # singular, no shift: tf's Cholesky fails, the host's pseudo-inverse works
    x, how = ops.solve_shifted(tf.constant(a), tf.constant([1.0, 0.0, 0.0, 0.0]), 0.0)
    assert how == "eigh-pinv (host)", how
    np.testing.assert_allclose(ops.host(x), [1.0, 0, 0, 0], atol=1e-12)
    g = on_device(Gradient(o=np.zeros((10, 5)), e=np.zeros(10), n=10))
    for solver in ("dense", "cg", "samplespace"):  # S = 0, F = 0, no shift: 0, never NaN
        delta, _ = sr_for(solver, 5, shift=0).direction(g, 0.0)
        np.testing.assert_array_equal(delta, 0.0)


# -- optimizer.o_matrix: recompute (O as an operator, never formed) -----------------------
def implicit_problem(rng, n=40, chunk=16384):
    from distvmc.optimizers.jacobian import ImplicitO, JacobianProducts

    cfg, _, wf = small_problem(["wavefunction.factors.1.trainable=true"])  # envelope too
    x = rng.standard_normal((n, 1, 3)) * 1.2
    e = rng.standard_normal(n)
    o = LogDerivatives(wf)(x)
    mean = o.mean(0)
    op = ImplicitO(JacobianProducts(wf, chunk_size=chunk), tf.constant(x), mean)
    return wf, Gradient(o=o - mean, e=e - e.mean(), n=n), op


@pytest.mark.parametrize("chunk", [16384, 7])  # one pass, and chunks summed / joined
def test_implicit_o_products_equal_the_stored_centred_o(chunk, rng):
    wf, g, op = implicit_problem(rng, chunk=chunk)
    assert op.shape == g.o.shape
    v = rng.standard_normal(g.o.shape[1])
    u = rng.standard_normal(g.o.shape[0])  # not centred: O_c^T u needs the mean term
    np.testing.assert_allclose(op.matvec(v).numpy(), g.o @ v, rtol=0, atol=1e-12 * np.abs(g.o @ v).max())
    np.testing.assert_allclose(op.rmatvec(u).numpy(), g.o.T @ u, rtol=0,
                               atol=1e-12 * np.abs(g.o.T @ u).max())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("extra", [False, True])
def test_cg_on_the_implicit_o_gives_the_dense_direction(extra, momentum, rng):
    wf, g, op = implicit_problem(rng)
    p = wf.n_parameters
    if extra:
        g.extra = rng.standard_normal(p) * 0.1
    prev = {"previous_delta": rng.standard_normal(p) * 0.3} if momentum else {}
    dense = sr_for("dense", p, momentum=momentum)
    dense.set_state(prev)
    ref, _ = dense.direction(g, 1e-3)
    sr = sr_for("auto", p, cg_tol=1e-12, cg_maxiter=5000, momentum=momentum)
    sr.set_state(prev)
    got, info = sr.direction(Gradient(o=op, e=tf.constant(g.e), n=g.n, extra=g.extra), 1e-3)
    assert info["solver"] == "cg" and info["solve"].startswith("cg("), info
    assert np.linalg.norm(got - ref) <= 1e-9 * np.linalg.norm(ref)


def test_the_implicit_o_refuses_what_needs_o_itself(rng):
    _, g, op = implicit_problem(rng)
    for solver in ("dense", "samplespace"):
        with pytest.raises(ValueError, match="o_matrix = recompute never forms"):
            sr_for(solver, g.o.shape[1]).direction(Gradient(o=op, e=tf.constant(g.e), n=g.n), 1e-3)
    for bad, why in (("optimizer.solver=dense", "solver = 'dense' needs O"),
                     ("optimizer.solver=samplespace", "needs O itself"),
                     ("optimizer.cg_precondition=jacobi", "needs diag"),
                     ("excited.states=2", "excited states")):
        with pytest.raises(config.ConfigError, match=why):
            config.load(None, ["optimizer.o_matrix=recompute", bad])


def test_o_matrix_auto_recomputes_for_cg_from_ten_thousand_parameters():
    from distvmc.optimizers.sr import recompute_o

    def rule(*overrides, p=20000, n=4096, ranks=1):
        return recompute_o(config.load(None, list(overrides)).optimizer, p, n, ranks)

    assert rule()  # auto solver -> cg at P = 20k, 4096 samples
    assert not rule(p=9999)  # below the threshold: stored
    assert not rule(p=20000, n=512)  # auto solver -> samplespace (one rank, few samples)
    assert rule(p=20000, n=512, ranks=2)  # several ranks: cg
    assert not rule("optimizer.solver=dense")
    assert not rule("optimizer.cg_precondition=jacobi")
    assert not rule("optimizer.type=adam")
    assert not rule("optimizer.o_matrix=stored")
    assert rule("optimizer.o_matrix=recompute", p=10)  # explicit: always


@pytest.mark.parametrize("mode", ["auto", "recompute"])
def test_recomputed_products_that_disagree_with_o_fall_back_or_stop(mode, monkeypatch):
    from distvmc.job import Job
    from distvmc.optimizers import jacobian, sr

    monkeypatch.setattr(sr, "RECOMPUTE_MIN_PARAMETERS", 10)
    good = jacobian.JacobianProducts.jvp
    monkeypatch.setattr(jacobian.JacobianProducts, "jvp",
                        lambda self, x, v: good(self, x, v) * (1.0 + 1e-6))  # a wrong rule
    cfg = config.load(None, ["wavefunction.factors.0.hidden=[5, 4]", "sampler.walkers=64",
                             "sampler.thermalization=10", "optimizer.solver=cg",
                             f"optimizer.o_matrix={mode}"])
    lines = []
    job = Job(cfg, SingleProcess(), build_system(cfg), log=lambda *a, **k: lines.append(a[0]))
    job.start_state(0)
    assert job.driver.objective.o_products is not None  # chosen before the check
    if mode == "recompute":
        with pytest.raises(config.ConfigError, match="O v differs from the stored O"):
            job.driver.train(2)
        return
    job.driver.train(2)
    assert job.driver.objective.o_products is None  # fell back to the stored O
    assert any("recompute off (O v differs from the stored O" in ln for ln in lines), lines
    assert all(np.isfinite(r["energy"]) for r in job.history)
