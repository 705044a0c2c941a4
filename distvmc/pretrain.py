"""Pretraining: fit the network's orbitals to known orbitals before VMC.

As FermiNet and DeepQMC do, the orbital matrices of the determinant factor
(``orbital_matrices(x)``: one tensor (W, n_det, n_g, n_g) per species group,
entry [w, d, i, k] = phi^d_k(x_i)) are fitted by least squares to the orbitals of
a simple reference state (the samples are described below):

    loss = mean over walkers, determinants, groups and matrix entries of
           ((Phi_net - Phi_target)[w, d, i, k] / s_gk)^2

with s_gk the root-mean-square value of reference orbital k of group g on the
thermalized samples: each orbital is fitted relative to its own size (the "orbital
mismatch" printed is this loss).

``pretrain.method``
  ``hf`` (coulomb): unrestricted Hartree-Fock by PySCF (``pip install
  'distvmc[chem]'``) in ``pretrain.basis``; a spin-up group takes the occupied
  alpha orbitals, a spin-down group the beta orbitals (several groups of one spin
  take consecutive occupied orbitals). Evaluated on the host with
  ``mol.eval_gto("GTOval_sph", ...)``.
  ``oscillator`` (harmonic): the non-interacting oscillator orbitals in closed
  form, products of Hermite functions with the group's mass and omega_d per
  dimension. Each group fills them in order of energy sum_d hbar omega_d (n_d + 1/2);
  within a degenerate shell in decreasing lexicographic order of (n_1, ..., n_D):
  in 2D (0,0), (1,0), (0,1), (2,0), (1,1), (0,2), ... (x before y). An open shell is
  filled in that order too (the target is then one of the degenerate states).
  ``auto``: hf for coulomb, oscillator for harmonic.

Samples: every rank keeps ``sampler.walkers`` walkers, started as the VMC walkers are
(:meth:`System.initial_walkers`) with a NumPy generator keyed by (seed, rank), and
moves them by all-particle Metropolis on the mixture

    f |Psi_target|^2 + (1 - f) |Psi_net|^2,   f = ``pretrain.reference_fraction``,

with |Psi_target|^2 = prod_g det(Phi_target,g)^2 and Psi_net the whole wavefunction
being pretrained (both unnormalized, as in FermiNet, whose default is f = 0). With
f = 1 the network is fitted only where the reference density is large and is
unconstrained elsewhere; with f < 1 the fit also visits where the network puts its
weight. ``sampler.thermalization`` steps first, then ``pretrain.sweeps`` per iteration (the
step adapted toward ``sampler.target_acceptance``). Gradients (tf.GradientTape) are
averaged over ranks with one allreduce per iteration, so every rank takes the same
Adam step and the parameters stay identical. Afterwards the VMC sampler starts from
the pretraining walkers (and thermalizes as usual).

Pretraining runs only for a fresh start of state 0, never on ``--resume`` (the
checkpoint holds trained parameters). It is optional: a run works without it, it
only converges more slowly.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from distvmc.schema import ConfigError

METHODS = ["auto", "hf", "oscillator"]


# ----------------------------------------------------------------------------
# Config checks (no TensorFlow, no PySCF import)
# ----------------------------------------------------------------------------


def resolve_method(c: dict) -> str:
    """hf or oscillator for a (raw, validated) config tree."""
    m = c["pretrain"]["method"]
    if m != "auto":
        return m
    p = c["potential"]["type"]
    if p == "coulomb":
        return "hf"
    if p == "harmonic":
        return "oscillator"
    raise ConfigError(f"pretrain.method = 'auto': no reference orbitals for potential.type = "
                      f"{p!r} (hf needs coulomb, oscillator needs harmonic); set "
                      f"pretrain.iterations: 0")


def check(c: dict) -> None:
    """Cross-checks of the pretrain section (run by :func:`distvmc.config.validate`)."""
    from distvmc.wavefunctions import is_antisymmetric

    pre = c["pretrain"]
    if pre["iterations"] == 0:
        return
    key = f"pretrain.iterations = {pre['iterations']}"
    if c["integrator"] != "sampling":
        raise ConfigError(f"{key}: pretraining is for integrator: sampling (grid runs are "
                          f"exact already); set pretrain.iterations: 0")
    if not any(is_antisymmetric(f) for f in c["wavefunction"]["factors"]):
        have = ", ".join(f["type"] for f in c["wavefunction"]["factors"])
        raise ConfigError(f"{key}: pretraining fits the orbitals of a determinant factor, but "
                          f"wavefunction.factors ({have}) has none; add one (type: slater) or "
                          f"set pretrain.iterations: 0")
    method = resolve_method(c)
    p, groups = c["potential"], c["system"]["species"]
    if method == "hf":
        if p["type"] != "coulomb":
            raise ConfigError(f"pretrain.method = 'hf' needs potential.type = 'coulomb', "
                              f"not {p['type']!r}")
        if c["system"]["dim"] != 3:
            raise ConfigError(f"pretrain.method = 'hf' needs system.dim = 3, not "
                              f"{c['system']['dim']}")
        bad = [z for z in p["charges"] if abs(z - round(z)) > 1e-12]
        if bad:
            raise ConfigError(f"pretrain.method = 'hf' needs integer nuclear charges, not "
                              f"potential.charges = {p['charges']!r}")
        if abs(c["system"]["hbar"] - 1.0) > 1e-12:
            raise ConfigError("pretrain.method = 'hf' needs atomic units (system.hbar = 1)")
        for k, g in enumerate(groups):
            if g["spin"] not in ("up", "down") or g["charge"] != -1.0 or g["mass"] != 1.0:
                raise ConfigError(f"pretrain.method = 'hf': species {k} is not a group of "
                                  f"electrons (spin up/down, charge -1, mass 1)")
        import importlib.util

        if importlib.util.find_spec("pyscf") is None:
            raise ConfigError("pretrain.method = 'hf' needs PySCF: pip install 'distvmc[chem]'")
    elif p["type"] != "harmonic":
        raise ConfigError(f"pretrain.method = 'oscillator' needs potential.type = 'harmonic', "
                          f"not {p['type']!r}")


# ----------------------------------------------------------------------------
# Reference orbitals (NumPy)
# ----------------------------------------------------------------------------


class Target:
    """Reference orbitals: ``matrices(x)`` with x (W, N, D) -> one array (W, n_g, n_g)
    per species group, entry [w, i, k] = phi_k(x_i) for particle i of the group."""

    description = ""

    def __init__(self, blocks):
        self.blocks = [(int(s), int(n)) for s, n in blocks]

    def orbitals(self, g: int, r: np.ndarray) -> np.ndarray:
        """Group g's n_g orbitals at points r (M, D) -> (M, n_g)."""
        raise NotImplementedError

    def matrices(self, x: np.ndarray) -> list[np.ndarray]:
        out = []
        for g, (start, n) in enumerate(self.blocks):
            r = x[:, start:start + n].reshape(-1, x.shape[-1])
            out.append(self.orbitals(g, r).reshape(x.shape[0], n, n))
        return out

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """log |Psi_target|^2 = sum_g 2 log|det Phi_g|, shape (W,)."""
        out = np.zeros(x.shape[0])
        for m in self.matrices(x):
            out += 2.0 * np.linalg.slogdet(m)[1]
        return out


class HartreeFock(Target):
    """UHF orbitals of the molecule (nuclei, charges; electrons by spin) by PySCF."""

    def __init__(self, system, basis: str):
        super().__init__([(s.start, s.count) for s in system.species])
        try:
            from pyscf import gto, scf
        except ImportError:  # the config check names the fix already; API users get it here
            raise ConfigError("pretrain.method = 'hf' needs PySCF: pip install 'distvmc[chem]'") \
                from None
        z = np.rint(np.asarray(system.charges, np.float64)).astype(int)
        centres = np.asarray(system.centres, np.float64)
        spins = [s.spin for s in system.species]
        n_up = sum(s.count for s in system.species if s.spin == "up")
        n_down = sum(s.count for s in system.species if s.spin == "down")
        if n_up + n_down != system.particles:
            raise ConfigError("pretrain.method = 'hf': every species must be spin up or down")
        try:
            self.mol = gto.M(atom=[(int(zk), tuple(map(float, rk))) for zk, rk in zip(z, centres)],
                             unit="Bohr", basis=basis, spin=n_up - n_down,
                             charge=int(z.sum()) - system.particles, verbose=0)
        except Exception as e:  # unknown basis, impossible spin: one line
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"pretrain.basis = {basis!r}: PySCF cannot build the molecule "
                              f"({why})") from None
        mf = scf.UHF(self.mol)
        mf.verbose = 0
        self.energy = float(mf.kernel())
        self.converged = bool(mf.converged)
        occ = {"up": mf.mo_coeff[0][:, mf.mo_occ[0] > 0],
               "down": mf.mo_coeff[1][:, mf.mo_occ[1] > 0]}
        taken = {"up": 0, "down": 0}
        self.coeffs = []
        for s, (_, n) in zip(spins, self.blocks):
            c = occ[s][:, taken[s]:taken[s] + n]
            if c.shape[1] < n:
                raise ConfigError(f"pretrain.basis = {basis!r}: UHF has {occ[s].shape[1]} "
                                  f"occupied spin-{s} orbitals, the groups need more")
            self.coeffs.append(c)
            taken[s] += n
        self.description = (f"UHF/{basis}: E = {self.energy:.6f} Ha"
                            + ("" if self.converged else " (SCF not converged)"))

    def orbitals(self, g, r):
        return self.mol.eval_gto("GTOval_sph", np.ascontiguousarray(r)) @ self.coeffs[g]


def oscillator_levels(n: int, omega) -> list[tuple[int, ...]]:
    """The n lowest quantum-number tuples (n_1, ..., n_D) of an oscillator with
    frequencies omega (D,): by energy sum_d omega_d (n_d + 1/2), ties in decreasing
    lexicographic order ((1, 0) before (0, 1))."""
    omega = np.asarray(omega, np.float64)
    d = len(omega)
    top = n  # no level of the n lowest has a quantum number above n - 1
    cands = list(itertools.product(range(top), repeat=d))
    cands.sort(key=lambda q: (round(float(np.dot(omega, np.asarray(q) + 0.5)), 9),
                              tuple(-qi for qi in q)))
    return cands[:n]


def hermite_functions(nmax: int, x: np.ndarray, a: float) -> np.ndarray:
    """Normalized 1D oscillator functions psi_0..psi_nmax at x (M,) with a = m omega / hbar:
    psi_n(x) = (a/pi)^(1/4) / sqrt(2^n n!) H_n(sqrt(a) x) exp(-a x^2 / 2). Shape (M, nmax + 1)."""
    y = math.sqrt(a) * x
    out = np.empty(x.shape + (nmax + 1,))
    out[..., 0] = (a / math.pi) ** 0.25 * np.exp(-0.5 * y * y)
    if nmax >= 1:
        out[..., 1] = math.sqrt(2.0) * y * out[..., 0]
    for k in range(1, nmax):
        out[..., k + 1] = (math.sqrt(2.0 / (k + 1)) * y * out[..., k]
                           - math.sqrt(k / (k + 1)) * out[..., k - 1])
    return out


class Oscillator(Target):
    """Non-interacting harmonic-oscillator orbitals, filled per group in energy order."""

    def __init__(self, system, omega):
        super().__init__([(s.start, s.count) for s in system.species])
        self.dim = system.dim
        self.omega = np.broadcast_to(np.asarray(omega, np.float64), (system.dim,)).copy()
        self.hbar = float(system.hbar)
        self.masses = [float(s.mass) for s in system.species]
        self.levels = [oscillator_levels(n, self.omega) for _, n in self.blocks]
        self.description = "oscillator orbitals " + "; ".join(
            " ".join("".join(map(str, q)) for q in lv) for lv in self.levels)

    def orbitals(self, g, r):
        levels = self.levels[g]
        nmax = max(max(q) for q in levels)
        out = np.ones((r.shape[0], len(levels)))
        for d in range(self.dim):
            h = hermite_functions(nmax, r[:, d], self.masses[g] * self.omega[d] / self.hbar)
            out *= h[:, [q[d] for q in levels]]
        return out


def make_target(cfg, system) -> Target:
    method = resolve_method(cfg.to_dict())
    if method == "hf":
        return HartreeFock(system, cfg.pretrain.basis)
    return Oscillator(system, cfg.potential.omega)


# ----------------------------------------------------------------------------
# The fit
# ----------------------------------------------------------------------------


def orbital_factor(wf):
    """The factor of ``wf`` with ``orbital_matrices`` (the determinant), or None."""
    for f in getattr(wf, "factors", []):
        if hasattr(f, "orbital_matrices"):
            return f
    return None


class Metropolis:
    """All-particle Metropolis in NumPy (one rank's walkers) on the density
    ``log_density(x)`` -> (W,) log of an unnormalized probability."""

    def __init__(self, log_density, x0: np.ndarray, step: float, rng, comm, goal: float):
        self.log_density, self.x, self.step, self.rng = log_density, x0.copy(), step, rng
        self.comm, self.goal = comm, goal

    def run(self, sweeps: int, adapt: bool = True) -> float:
        # The density changes between runs (the network is being fitted): a cached
        # log density of the old parameters would compare every proposal against a
        # stale value, and walkers whose old value was high would never move again.
        self.logp = self.log_density(self.x)
        acc = 0
        for _ in range(sweeps):
            prop = self.x + self.step * self.rng.standard_normal(self.x.shape)
            logp = self.log_density(prop)
            ok = np.log(self.rng.uniform(size=len(logp))) < logp - self.logp
            self.x[ok], self.logp[ok] = prop[ok], logp[ok]
            acc += int(ok.sum())
        tot = self.comm.allreduce(np.array([float(acc), float(sweeps * len(self.logp))]))
        rate = float(tot[0] / max(tot[1], 1.0))
        if adapt and sweeps:
            self.step *= float(np.clip(rate / self.goal, 0.5, 2.0))
        return rate


def mixture_density(target: Target, log_psi_net, fraction: float):
    """x -> log(f |Psi_ref(x)|^2 + (1 - f) |Psi_net(x)|^2) (each unnormalized, as FermiNet
    mixes them); f = 1 is the reference alone, f = 0 the network alone."""
    if fraction >= 1.0:
        return target.log_density
    if fraction <= 0.0:
        return lambda x: 2.0 * log_psi_net(x)
    lf, lg = math.log(fraction), math.log1p(-fraction)
    return lambda x: np.logaddexp(lf + target.log_density(x), lg + 2.0 * log_psi_net(x))


def pretrain(wf, system, cfg, comm, seed: int, log=print, target: Target | None = None,
             walkers: np.ndarray | None = None) -> dict:
    """Fit ``wf``'s orbitals to the target's (``pretrain.iterations`` Adam steps).

    Returns {"initial": mismatch, "final": mismatch, "walkers": (W, N, D) final
    pretraining walkers of this rank, "seconds", "acceptance"}.
    """
    import tensorflow as tf

    pre, s = cfg.pretrain, cfg.sampler
    factor = orbital_factor(wf)
    if factor is None:
        raise ConfigError(f"pretrain.iterations = {pre.iterations}: no factor of the "
                          f"wavefunction has orbitals (orbital_matrices) to pretrain")
    t0 = time.perf_counter()
    target = target or make_target(cfg, system)
    rng = np.random.default_rng(np.random.SeedSequence([seed, comm.rank, 7]))
    x0 = system.initial_walkers(rng, s.walkers, s.init_width) if walkers is None else walkers
    variables = list(factor.trainable_variables)
    dtype = variables[0].dtype if variables else tf.float64
    fraction = float(pre.reference_fraction)
    log_psi_net = None
    if fraction < 1.0:
        net = tf.function(lambda x: wf(x)[1], jit_compile=True, reduce_retracing=True)

        def log_psi_net(x):
            out = np.asarray(net(tf.constant(x, dtype)), np.float64)
            return np.where(np.isfinite(out), out, -np.inf)  # a node: never accepted

    density = mixture_density(target, log_psi_net, fraction)
    chain = Metropolis(density, np.asarray(x0, np.float64), s.step, rng, comm,
                       s.target_acceptance)
    for _ in range(0, s.thermalization, 20):
        chain.run(20)

    # Each reference orbital's root-mean-square value on the thermalized samples (all
    # ranks): errors are measured relative to it, so a small orbital (Li 2s beside 1s)
    # is fitted as closely as a large one. An absolute loss let the 2s error reach the
    # 2s values themselves and the fitted determinant was e^-3.6 times the reference's.
    sums = np.concatenate([np.sum(t * t, axis=(0, 1)) for t in target.matrices(chain.x)]
                          + [[float(len(chain.x))]])
    sums = comm.allreduce(sums)
    scales, k = [], 0
    for _, n in target.blocks:
        rms = np.sqrt(sums[k:k + n] / (sums[-1] * n))
        scales.append(tf.constant(np.maximum(rms, 1e-300), dtype))
        k += n

    @tf.function(jit_compile=True)
    def loss_and_grads(x, targets):
        with tf.GradientTape() as tape:
            mats = factor.orbital_matrices(x)
            loss = 0.0
            for m, t, sc in zip(mats, targets, scales):
                r = (m - t[:, None]) / sc
                loss += tf.reduce_mean(tf.reduce_sum(r * r, axis=[2, 3])) / float(sc.shape[0])
            loss = loss / len(mats)
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, grads

    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(sh)) for sh in shapes]
    m_, v_ = np.zeros(sum(sizes)), np.zeros(sum(sizes))
    b1, b2, eps = 0.9, 0.999, 1e-8
    initial, loss, rate = float("nan"), float("nan"), float("nan")
    for it in range(1, pre.iterations + 1):
        rate = chain.run(pre.sweeps)
        x = tf.constant(chain.x, dtype)
        targets = [tf.constant(t, dtype) for t in target.matrices(chain.x)]
        local_loss, grads = loss_and_grads(x, targets)
        flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in grads]
                              + [[float(local_loss)]])
        flat = comm.allreduce(flat) / comm.size  # same walkers per rank: the global mean
        g, loss = flat[:-1], float(flat[-1])
        if it == 1:
            initial = loss
        m_ = b1 * m_ + (1 - b1) * g
        v_ = b2 * v_ + (1 - b2) * g * g
        delta = pre.lr * (m_ / (1 - b1 ** it)) / (np.sqrt(v_ / (1 - b2 ** it)) + eps)
        k = 0
        for var, sh, n in zip(variables, shapes, sizes):
            var.assign_sub(delta[k:k + n].reshape(sh).astype(var.dtype.as_numpy_dtype))
            k += n
        if it % pre.log_every == 0 or it == 1:
            log(f"pretrain {it}/{pre.iterations}: orbital mismatch {loss:.3e} "
                f"(acceptance {rate:.2f}, {time.perf_counter() - t0:.1f} s)")
    # the mismatch after the last step, on the last samples
    local_loss, _ = loss_and_grads(tf.constant(chain.x, dtype),
                                   [tf.constant(t, dtype) for t in target.matrices(chain.x)])
    final = float(comm.allreduce(np.array([float(local_loss)]))[0] / comm.size)
    secs = time.perf_counter() - t0
    log(f"pretrain done: orbital mismatch {initial:.3e} -> {final:.3e} after {pre.iterations} "
        f"iterations ({target.description}), {secs:.1f} s")
    return {"initial": initial, "final": final, "walkers": chain.x.copy(), "seconds": secs,
            "acceptance": rate}
