"""One-particle-at-a-time Metropolis moves (sampler.moves: one) and where walkers start."""

import os
import shutil

import h5py
import numpy as np
import tensorflow as tf

from conftest import quiet
from distvmc import stats
from distvmc.comm import SingleProcess
from distvmc.config import validate
from distvmc.sampler import MetropolisSampler, stream_key
from distvmc.systems import build_system

# 3 particles in 2D, particles 0 and 1 in group 0 and particle 2 in group 1:
# |psi|^2 = prod_i exp(-2 alpha_i |x_i|^2), so <|x_i|^2> = D / (4 alpha_i).
ALPHA = np.array([0.5, 0.5, 4.0])
GROUPS = [0, 0, 1]


def gaussian(x):
    return -tf.reduce_sum(tf.constant(ALPHA, x.dtype)[None, :, None] * x * x, axis=[1, 2])


def make(seed=0, walkers=256, step=0.5):
    x0 = np.random.default_rng(seed).standard_normal((walkers, 3, 2))
    return MetropolisSampler(gaussian, x0, step, stream_key(seed, 0), SingleProcess(),
                             target_acceptance=0.5, moves="one", groups=GROUPS)


def test_one_particle_moves_sample_the_right_moments_with_a_step_per_group():
    s = make()
    s.thermalize(200)
    steps = s.steps.numpy()
    assert steps[1] < 0.6 * steps[0]  # the narrow group gets its own, smaller step
    assert np.all(np.abs(s.last_group_acceptance - 0.5) < 0.15), s.last_group_acceptance
    xs, acc = s.sample(150, 2)  # (150, W, 3, 2)
    assert 0.35 < acc < 0.65
    r2 = (xs ** 2).sum(axis=3)  # (M, W, 3)
    for cols, alpha in (([0, 1], 0.5), ([2], 4.0)):
        st = stats.summarize(r2[:, :, cols].mean(axis=2))
        exact = 2 / (4 * alpha)
        assert abs(st.mean - exact) < 4 * st.error, (cols, st.mean, st.error, exact)
        assert st.error < 0.03 * exact
    # logp stays consistent with the walkers
    np.testing.assert_allclose(s.logp.numpy(), 2 * gaussian(s.x).numpy(), rtol=1e-12)


def test_one_particle_moves_resume_bitwise_and_old_states_load():
    a = make(seed=3, walkers=32)
    a.thermalize(30)
    snap = a.state()
    assert snap["steps"].shape == (2,)
    xs_a, acc_a = a.sample(4, 3)
    a.adapt(acc_a)
    xs_a2, _ = a.sample(2, 3)
    b = make(seed=3, walkers=32, step=9.0)  # another start: everything comes from the state
    b.set_state(snap)
    xs_b, acc_b = b.sample(4, 3)
    b.adapt(acc_b)
    xs_b2, _ = b.sample(2, 3)
    assert acc_a == acc_b
    assert xs_a.tobytes() == xs_b.tobytes() and xs_a2.tobytes() == xs_b2.tobytes()
    assert a.steps.numpy().tobytes() == b.steps.numpy().tobytes()
    old = {k: v for k, v in snap.items() if k != "steps"}  # a state written before moves: one
    b.set_state(old)
    assert np.all(b.steps.numpy() == snap["step"])


def test_all_moves_state_has_no_per_group_steps():
    x0 = np.zeros((4, 3, 2))
    s = MetropolisSampler(gaussian, x0, 0.5, stream_key(0, 0), SingleProcess(), groups=GROUPS)
    assert "steps" not in s.state() and s.proposal_step() == 0.5


def test_walkers_start_near_their_nuclei_apart_and_spin_balanced():
    for nuclei, charges, (up, down) in (([[0, 0, 0], [0, 0, 1.4011]], [1, 1], (1, 1)),
                                        ([[0, 0, 0]], [3], (2, 1)),
                                        ([[0, 0, 0], [0, 0, 2.0]], [3, 1], (2, 2))):
        # home_positions uses only the spins; "boson" keeps validation free of determinants
        species = [{"count": up, "spin": "up", "statistics": "boson"},
                   {"count": down, "spin": "down", "statistics": "boson"}]
        cfg = validate({"system": {"species": species},
                        "potential": {"type": "coulomb", "nuclei": nuclei, "charges": charges}})
        system = build_system(cfg)
        n = up + down
        home = system.home_positions()
        per_nucleus = [int(np.sum(np.all(home == np.asarray(c, float), axis=1))) for c in nuclei]
        assert per_nucleus == [int(z) for z in charges], per_nucleus
        if charges == [1, 1]:  # H2: one electron per proton, one of each spin
            assert home[0, 2] != home[1, 2]
        x = system.initial_walkers(np.random.default_rng(0), 500, 1.0)
        for i in range(n):
            for j in range(i + 1, n):
                if system.spins[i] == system.spins[j]:
                    assert np.min(np.linalg.norm(x[:, i] - x[:, j], axis=-1)) > 1e-3


def test_one_particle_moves_run_resumes_bitwise(tmp_path):
    """A helium run (two groups of one) with moves: one, checkpointed at iteration 2 of 4:
    resumed from that checkpoint it ends bitwise as the uninterrupted run."""
    from distvmc import api

    over = ["name=he", "system.particles=2", "potential.charges=[2.0]",
            "wavefunction.factors.0.hidden=[4]", "sampler.moves=one", "sampler.walkers=16",
            "sampler.thermalization=6", "sampler.sweeps_per_sample=2", "optimizer.type=adam",
            "optimizer.lr=0.01", "optimizer.iterations=4", "checkpoint.every=2",
            "evaluation.samples=64", "evaluation.thermalization=2",
            "evaluation.sweeps_per_sample=1", "output.log_every=1"]
    ref = tmp_path / "ref"
    api.run(None, over, out=str(ref), log=quiet)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    ckpts = sorted(os.listdir(run / "checkpoints"))
    assert "ckpt-00000002.h5" in ckpts, ckpts
    for name in ckpts:
        if name != "ckpt-00000002.h5":
            os.remove(run / "checkpoints" / name)
    for name in ("params.h5", "summary.json", "results.h5"):
        if (run / name).exists():
            os.remove(run / name)
    api.run(resume=str(run), log=quiet)

    def params(d):
        with h5py.File(d / "params.h5") as f:
            out = {}
            f.visititems(lambda n, o: out.__setitem__(n, o[()].tobytes())
                         if isinstance(o, h5py.Dataset) else None)
            return out

    assert params(ref) == params(run)
    with h5py.File(ref / "checkpoints" / "ckpt-00000004.h5") as f:
        names = []
        f.visit(names.append)
    assert any(n.endswith("steps") for n in names), names
