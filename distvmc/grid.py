"""Grid mode: energies by quadrature on a box instead of Metropolis sampling.

For a total dimension N*D of 1 or 2 (one particle in 1D or 2D, two particles
in 1D) the energy of the wavefunction psi is integrated on a tensor-product
grid of cell centres covering the box [-L, L] in every coordinate:

    <psi|psi>   = h^{ND} sum_g psi_g^2
    <psi|V|psi> = h^{ND} sum_g V_g psi_g^2
    <psi|T|psi> = h^{ND} sum_g sum_k (hbar^2/2m_k) (d psi_g / dx_k)^2         kinetic: parts
                = h^{ND} sum_g psi_g (-sum_k (hbar^2/2m_k) d^2 psi_g / dx_k^2)  kinetic: laplacian

The two kinetic forms differ by the boundary term of the integration by parts,
which vanishes when psi is negligible at the box edge (checked: a one-line
warning when |psi|^2 on the outer cells exceeds ``grid.edge_tolerance`` of its
peak). For smooth functions decaying inside the box this midpoint rule is
spectrally accurate (Hermite functions give n + 1/2 to ~1e-12). The points are
cell centres, never the centre of a symmetric box, so an odd state's node
never sits on a grid point (where log|psi| would be -inf).

psi_g = sign(x_g) exp(log|psi(x_g)| - max_g log|psi|) is built from the same
:class:`~distvmc.wavefunctions.Wavefunction` as in sampling mode; its
x-gradient comes from a tape over log|psi| and the Laplacian form reuses
:func:`distvmc.hamiltonian.local_energy` with the ``hessian`` method: the
energy is differentiated with respect to the parameters by a GradientTape, and
a tape over ``fwd_over_fwd`` (nested ForwardAccumulators) returns wrong
parameter gradients in TF 2.21 (values are right; checked in tests/test_grid.py).

Excited states (:mod:`distvmc.excited`): the found lower states phi_j
(orthonormal on the grid) are projected out exactly before the energy is
computed, psi -> P psi = psi - sum_j <phi_j|psi> phi_j (and the same for its
gradient and H psi, which are linear in psi), so the energy of state k is a
Rayleigh quotient on the orthogonal complement of the lower states: it cannot
collapse onto them, whatever the initialisation or the seed.

Optimization: theta-gradients of the quadrature energy by TensorFlow
(a tape over the whole grid energy), then SR with the exact metric of the
normalized projected state, S = <d psi|d psi>/<psi|psi> - <d psi|psi><psi|d psi>/<psi|psi>^2
with d psi = P (psi O), or Adam, through the driver's one loop
(:class:`distvmc.objectives.QuadratureEnergy`: step control, and a state has
converged when its energy variance <(H - E)^2> by quadrature is below
``grid.tolerance``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from distvmc.config import ConfigError
from distvmc.hamiltonian import local_energy
from distvmc.optimizers.jacobian import LogDerivatives


class Grid:
    """Cell-centred tensor-product grid for the N*D coordinates of a configuration.

    Attributes:
      axes: list of N*D arrays of cell centres (coordinate k varies along axis k).
      spacing: (N*D,) actual spacings h_k = 2 L_k / n_k <= the requested spacing.
      shape: (n_0, ..., n_{ND-1}) points per coordinate.
      points: positions, shape (G, N, D) with G = prod(shape), C order over axes.
      cell_volume: prod_k h_k.
      edge: (G,) bool, True on the outermost layer of cells.
    """

    def __init__(self, half_widths, spacing: float, particles: int, dim: int):
        nd = particles * dim
        half = np.broadcast_to(np.asarray(half_widths, dtype=np.float64), (nd,))
        counts = [2 * max(1, math.ceil(float(L) / spacing - 1e-9)) for L in half]
        self.half_widths = half.copy()
        self.spacing = np.array([2 * L / n for L, n in zip(half, counts)])
        self.axes = [-L + (np.arange(n) + 0.5) * h for L, n, h in zip(half, counts, self.spacing)]
        self.shape = tuple(counts)
        mesh = np.meshgrid(*self.axes, indexing="ij")
        self.points = np.stack([m.ravel() for m in mesh], axis=-1).reshape(-1, particles, dim)
        self.cell_volume = float(np.prod(self.spacing))
        idx = np.meshgrid(*[np.arange(n) for n in counts], indexing="ij")
        self.edge = np.zeros(self.size, dtype=bool)
        for i, n in zip(idx, counts):
            self.edge |= (i.ravel() == 0) | (i.ravel() == n - 1)

    @classmethod
    def from_config(cls, cfg) -> "Grid":
        return cls(cfg.grid.box, cfg.grid.spacing, cfg.system.particles, cfg.system.dim)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def integrate(self, f: np.ndarray) -> float:
        """h^{ND} sum_g f_g for f of shape (G,)."""
        return float(self.cell_volume * np.sum(f))


@dataclass
class GridState:
    """A found state on the grid, normalized: cell_volume * sum(psi^2) = 1.

    psi (G,), dpsi (G, N*D) its gradient, hpsi (G,) H psi (Laplacian form).
    """

    psi: np.ndarray
    dpsi: np.ndarray
    hpsi: np.ndarray
    energy: float
    energy_parts: float
    energy_laplacian: float
    kinetic: float
    potential: float
    edge_ratio: float
    theta: np.ndarray
    coefficients: np.ndarray  # c_j = <phi_j|psi_raw> projected out: psi = (psi_raw - sum_j c_j phi_j) / sqrt(norm)
    raw_overlaps: np.ndarray  # normalized overlaps <phi_j|psi_raw>/|psi_raw| before projection
    info: dict = field(default_factory=dict)


class GridEnergy(tf.Module):
    """Quadrature energy of the wavefunction, with up to ``max_lower`` states projected out.

    The lower states live in fixed-size variables (unused slots are zero and
    project nothing), so the energy and its gradient are traced once per run.
    """

    def __init__(self, wavefunction, system, grid: Grid, kinetic: str = "parts",
                 laplacian_method: str = "hessian", max_lower: int = 1,
                 chunk_size: int = 65536, dtype=tf.float64):
        super().__init__(name="grid_energy")
        if kinetic not in ("parts", "laplacian"):
            raise ValueError(f"grid.kinetic = {kinetic!r}: must be parts or laplacian")
        self.wf, self.system, self.grid = wavefunction, system, grid
        self.kinetic, self.method = kinetic, laplacian_method
        self.dtype = dtype
        g, nd = grid.size, system.particles * system.dim
        self.x = tf.constant(grid.points, dtype=dtype)
        v = system.potential(self.x)
        if tuple(v.shape) != (g,):
            raise ValueError(f"potential returned shape {tuple(v.shape)} for {g} grid points; "
                             "it must return one energy per configuration")
        v = np.asarray(v.numpy(), dtype=np.float64)
        if not np.all(np.isfinite(v)):
            bad = grid.points[~np.isfinite(v)][0].ravel().tolist()
            raise ConfigError(f"potential is not finite at grid point {bad}; shift grid.box or "
                              "change grid.spacing so no point sits on the singularity")
        self.v = tf.constant(v, dtype=dtype)
        self.v_np = v
        self.c = tf.constant(np.repeat(np.asarray(system.kinetic_prefactor, np.float64),
                                       system.dim), dtype=dtype)  # (ND,)
        self.w = tf.constant(grid.cell_volume, dtype=dtype)
        k = max(int(max_lower), 1)
        self.max_lower = k
        self.phi = tf.Variable(tf.zeros([k, g], dtype), name="phi")
        self.dphi = tf.Variable(tf.zeros([k, g, nd], dtype), name="dphi")
        self.hphi = tf.Variable(tf.zeros([k, g], dtype), name="hphi")
        self.n_lower = 0
        self.log_derivatives = LogDerivatives(wavefunction, chunk_size)
        self._value_and_grad = tf.function(self._value_and_grad_impl)
        self._terms_all = tf.function(lambda: self._terms(True))
        self._variance = tf.function(self._variance_impl)

    # -- lower states ---------------------------------------------------
    def set_lower(self, states: list[GridState]) -> None:
        """Project these (orthonormal) states out of every later energy."""
        if len(states) > self.max_lower:
            raise ValueError(f"{len(states)} lower states but room for {self.max_lower}")
        g, nd = self.grid.size, self.system.particles * self.system.dim
        phi = np.zeros((self.max_lower, g))
        dphi = np.zeros((self.max_lower, g, nd))
        hphi = np.zeros((self.max_lower, g))
        for j, s in enumerate(states):
            phi[j], dphi[j], hphi[j] = s.psi, s.dpsi, s.hpsi
        self.phi.assign(phi)
        self.dphi.assign(dphi)
        self.hphi.assign(hphi)
        self.n_lower = len(states)

    # -- the quadrature ---------------------------------------------------
    def _amplitude(self, laplacian: bool):
        """psi (G,), d psi/dx (G, ND), H psi (G,) or None; psi scaled so max |psi| = 1."""
        nd = self.system.particles * self.system.dim
        x = self.x
        with tf.GradientTape() as tape:
            tape.watch(x)
            sign, u = self.wf(x)
        du = tf.reshape(tape.gradient(u, x), [-1, nd])  # each u_g depends on x_g only
        shift = tf.stop_gradient(tf.reduce_max(u))
        psi = sign * tf.exp(u - shift)
        dpsi = psi[:, None] * du
        hpsi = None
        if laplacian:
            _, kin, _ = local_energy(self.wf.log_abs, lambda y: self.v,
                                     self.system.kinetic_prefactor, x, self.method)
            hpsi = psi * (kin + self.v)
        return psi, dpsi, hpsi, shift

    def _terms(self, both: bool):
        lap = both or self.kinetic == "laplacian"
        psi, dpsi, hpsi, shift = self._amplitude(lap)
        w = self.w
        coef = w * tf.linalg.matvec(self.phi, psi)  # (K,) <phi_j|psi>
        psi_p = psi - tf.linalg.matvec(self.phi, coef, transpose_a=True)
        dpsi_p = dpsi - tf.einsum("k,kgn->gn", coef, self.dphi)
        norm = w * tf.reduce_sum(psi_p * psi_p)
        kin = w * tf.reduce_sum(self.c * dpsi_p * dpsi_p) / norm
        pot = w * tf.reduce_sum(self.v * psi_p * psi_p) / norm
        out = {"psi": psi_p, "dpsi": dpsi_p, "norm": norm, "raw_norm": w * tf.reduce_sum(psi * psi),
               "coef": coef, "kinetic_parts": kin, "potential": pot, "energy_parts": kin + pot,
               "raw_psi": psi, "shift": shift}
        if lap:
            hpsi_p = hpsi - tf.linalg.matvec(self.hphi, coef, transpose_a=True)
            out["hpsi"] = hpsi_p
            out["energy_laplacian"] = w * tf.reduce_sum(psi_p * hpsi_p) / norm
        out["energy"] = out["energy_parts"] if self.kinetic == "parts" else out["energy_laplacian"]
        return out

    def _value_and_grad_impl(self):
        params = self.wf.parameters
        with tf.GradientTape() as tape:
            t = self._terms(False)
        g = tape.gradient(t["energy"], params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flat = tf.concat([tf.reshape(gk, [-1]) for gk in g], axis=0)
        return t["energy"], flat, t["psi"], t["raw_psi"], t["norm"]

    def value_and_grad(self):
        """(E, dE/dtheta (P,), P psi (G,), psi (G,), <P psi|P psi>); E and the gradient
        as NumPy values, the rest as tensors (inputs of :meth:`metric`)."""
        e, g, psi_p, psi, norm = self._value_and_grad()
        return float(e), g.numpy().astype(np.float64), psi_p, psi, norm

    def _variance_impl(self):
        t = self._terms(True)
        r = t["hpsi"] - t["energy_laplacian"] * t["psi"]  # (H - E) P psi
        return self.w * tf.reduce_sum(r * r) / t["norm"]

    def variance(self) -> float:
        """<(H - E)^2> of the normalized projected state by quadrature (0 for an eigenstate)."""
        return float(self._variance())

    def terms(self) -> dict:
        """Every quadrature term with both kinetic forms, as NumPy values."""
        return {k: v.numpy() for k, v in self._terms_all().items()}

    @tf.function
    def _metric_impl(self, o, psi_p, psi, norm):
        w = self.w
        j = psi[:, None] * o  # (G, P): d psi_g / d theta
        coef = w * tf.matmul(self.phi, j)  # (K, P)
        j = j - tf.matmul(self.phi, coef, transpose_a=True)  # d (P psi) / d theta
        jp = w * tf.linalg.matvec(j, psi_p, transpose_a=True) / norm  # (P,)
        return w * tf.matmul(j, j, transpose_a=True) / norm - jp[:, None] * jp[None, :]

    def metric(self, psi_p, psi, norm) -> tf.Tensor:
        """SR metric of the normalized projected state, shape (P, P).

        d psi_g/d theta = psi_g O_g (O = d log|psi|/d theta); the projection is
        linear, so d(P psi) = P(psi O), and S is the Fubini-Study metric
        <dP psi|dP psi>/<P psi|P psi> - <dP psi|P psi><P psi|dP psi>/<P psi|P psi>^2.
        """
        o = tf.constant(self.log_derivatives(self.x), dtype=self.dtype)  # (G, P), chunked
        return self._metric_impl(o, psi_p, psi, norm)


def edge_ratio(grid: Grid, density: np.ndarray) -> float:
    """Largest |psi|^2 on the outer cells over its peak (0 when psi vanishes there)."""
    peak = float(np.max(density))
    return float(np.max(density[grid.edge]) / peak) if peak > 0 else 0.0


def finish_state(energy: GridEnergy, edge_tolerance: float, state: int = 0, log=print) -> GridState:
    """Normalize the optimized (projected) state, measure it, warn about the box edge."""
    t = energy.terms()
    n = float(t["norm"])
    s = 1.0 / math.sqrt(n)
    psi, dpsi, hpsi = t["psi"] * s, t["dpsi"] * s, t["hpsi"] * s
    rho = psi * psi
    ratio = edge_ratio(energy.grid, rho)
    if ratio > edge_tolerance:
        log(f"warning: state {state}: |psi|^2 at the grid box edge is {ratio:.1e} of its peak "
            f"(> grid.edge_tolerance = {edge_tolerance:g}); enlarge grid.box")
    raw = math.sqrt(float(t["raw_norm"]))
    coef = t["coef"][: energy.n_lower]
    return GridState(psi=psi, dpsi=dpsi, hpsi=hpsi, energy=float(t["energy"]),
                     energy_parts=float(t["energy_parts"]),
                     energy_laplacian=float(t["energy_laplacian"]),
                     kinetic=float(t["kinetic_parts"]), potential=float(t["potential"]),
                     edge_ratio=ratio, theta=energy.wf.get_flat(),
                     coefficients=coef, raw_overlaps=coef / raw,
                     info={"shift": float(t["shift"]), "norm": n})


def overlap_matrix(grid: Grid, states: list[GridState]) -> np.ndarray:
    """Normalized overlaps <psi_i|psi_j> of the found states by quadrature, shape (K, K)."""
    psi = np.stack([s.psi for s in states])
    gram = grid.cell_volume * psi @ psi.T
    d = np.sqrt(np.diag(gram))
    return gram / np.outer(d, d)


def grid_density(grid: Grid, found: list, rows: list) -> dict:
    """Normalized densities |psi_k|^2 on the grid: cell_volume * sum(density) = 1."""
    nd = len(grid.shape)
    labels = ([f"x{i}" for i in range(nd)] if nd > 1 else ["x"])
    return {
        "coordinates": labels,
        "axes": [a.tolist() for a in grid.axes],
        "shape": list(grid.shape),
        "spacing": grid.spacing.tolist(),
        "cell_volume": grid.cell_volume,
        "normalization": "cell_volume * sum(density) = 1; density has shape `shape` (C order)",
        "states": [{"state": r["state"], "energy": r["energy"],
                    "density": (s.psi ** 2).reshape(grid.shape).tolist()}
                   for s, r in zip(found, rows)],
    }


def grid_observables(grid: Grid, system, found: list) -> list[dict]:
    """<r>, <r^2> per particle about the origin by quadrature, for each state."""
    r = np.linalg.norm(grid.points, axis=-1).mean(axis=-1)  # (G,)
    r2 = (np.linalg.norm(grid.points, axis=-1) ** 2).mean(axis=-1)
    out = []
    for s in found:
        rho = s.psi ** 2
        out.append({"r": grid.integrate(rho * r), "r2": grid.integrate(rho * r2)})
    return out
