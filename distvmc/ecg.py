"""Independent reference energies for the pionless nuclei: correlated Gaussians.

A variational check that shares no code with the network VMC: the spatial
ground state of A <= 4 nucleons under the pionless Hamiltonian
(:mod:`distvmc.systems.pionless`) is expanded in permutation-symmetrized
explicitly correlated Gaussians,

    phi_k = S exp(-1/2 sum_{i<j} a^k_ij r_ij^2),

and the energy is the lowest root of the generalized eigenproblem H c = E N c.
Every matrix element is analytic (Suzuki and Varga, *Stochastic Variational
Approach to Quantum-Mechanical Few-Body Problems*, 1998). In orthonormal
internal (Jacobi) coordinates x (n = A - 1 vectors in 3D) exp(-1/2 r^T M r)
is exp(-1/2 x^T A x), and with C = A + B:

    <A|B>                     = (2 pi)^(3n/2) det(C)^(-3/2)
    <A| -sum grad^2 |B>       = 3 tr(A C^-1 B) <A|B>
    <A| exp(-c (w.x)^2) |B>   = (1 + 2c w^T C^-1 w)^(-3/2) <A|B>
    <A| exp(-c((w1.x)^2 + (w2.x)^2)) |B> = det(1_2 + 2c W^T C^-1 W)^(-3/2) <A|B>

with w the internal image of r_i - r_j and c = Lambda^2 / 4. The Gaussians
are chosen by the stochastic variational method: each new function is the
best of ``trials`` random candidates (pair widths 1/sqrt(a_ij) log-uniform in
[b_min, b_max] fm), and refinement sweeps replace a function when a random
candidate lowers the energy. The energy is an upper bound that decreases as
the basis grows: that is the point of it. It equals the deuteron's radial
solve to 0.1 keV with 18 functions (tests/test_ecg.py).

    python -m distvmc.ecg --nucleons 3 --basis 120 [--cutoff 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time

import numpy as np

from distvmc.config import UNITS
from distvmc.systems.pionless import CONSTANTS, default_alpha

HBAR2_OVER_M = UNITS["nuclear"]["hbar"] ** 2 / UNITS["nuclear"]["mass"]  # 41.4697 MeV fm^2


def internal_basis(a: int) -> np.ndarray:
    """(A - 1, A) orthonormal rows orthogonal to (1, ..., 1): internal coordinates
    x = U r whose Laplacian is the full one minus the centre of mass's."""
    q, _ = np.linalg.qr(np.concatenate([np.ones((a, 1)), np.eye(a)[:, :a - 1]], axis=1))
    return q[:, 1:].T.copy()


class PionlessECG:
    """Matrix elements of the pionless Hamiltonian between symmetrized correlated
    Gaussians for ``a`` equal-mass nucleons (MeV, fm)."""

    def __init__(self, a: int, cutoff: float = 4, c1=None, c2=None, d0=None, alpha=None):
        if not 2 <= a <= 4:
            raise ValueError(f"correlated Gaussians here cover A = 2, 3, 4 (got {a})")
        consts = CONSTANTS[int(cutoff)]
        self.a, self.n = a, a - 1
        self.c = float(cutoff) ** 2 / 4.0
        self.c1 = consts[0] if c1 is None else float(c1)
        self.c2 = consts[1] if c2 is None else float(c2)
        self.d0 = consts[2] if d0 is None else float(d0)
        self.alpha = default_alpha(a) if alpha is None else float(alpha)
        u = internal_basis(a)
        self.pairs = list(itertools.combinations(range(a), 2))
        eye = np.eye(a)
        self.w = np.array([u @ (eye[i] - eye[j]) for i, j in self.pairs])  # (pairs, n)
        index = {p: k for k, p in enumerate(self.pairs)}
        apex = []  # each triplet's three (pair, pair) choices of apex nucleon
        for i, j, k in itertools.combinations(range(a), 3):
            apex += [(index[(i, j)], index[(i, k)]), (index[(i, j)], index[(j, k)]),
                     (index[(i, k)], index[(j, k)])]
        self.apex = np.array(apex, dtype=np.int64).reshape(-1, 2)
        # permutations as orthogonal maps of the internal coordinates: r -> P r
        self.perms = np.array([u @ eye[list(p)] @ u.T for p in itertools.permutations(range(a))])

    def permuted(self, mats: np.ndarray) -> np.ndarray:
        """Every permutation of each Gaussian: (m, n, n) -> (m, A!, n, n), Q^T A Q."""
        return np.einsum("qki,mkl,qlj->mqij", self.perms, mats, self.perms)

    def matrix(self, widths: np.ndarray) -> np.ndarray:
        """A (n, n) of the Gaussian with pair coefficients a_ij (pairs,) in fm^-2."""
        return np.einsum("p,pi,pj->ij", widths, self.w, self.w)

    def elements(self, a: np.ndarray, bs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Overlaps and Hamiltonian elements of the normalized Gaussian A (n, n) with
        the symmetrized normalized Gaussians B (m, n, n): two arrays (m,)."""
        bp = self.permuted(bs)  # (m, q, n, n)
        cm = a + bp
        cinv = np.linalg.inv(cm)
        ov = (np.sqrt(np.linalg.det(2 * a) * np.linalg.det(2 * bs))[:, None]
              / np.linalg.det(cm)) ** 1.5  # (m, q)
        kin = 1.5 * HBAR2_OVER_M * np.einsum("ij,mqjk,mqki->mq", a, cinv, bp)
        wcw = np.einsum("pi,mqij,rj->mqpr", self.w, cinv, self.w)  # (m, q, P, P)
        diag = np.diagonal(wcw, axis1=2, axis2=3)
        v = (self.c1 + self.alpha * self.c2) * np.sum((1 + 2 * self.c * diag) ** -1.5, axis=-1)
        if len(self.apex):
            p1, p2 = self.apex[:, 0], self.apex[:, 1]
            g11, g22, g12 = diag[..., p1], diag[..., p2], wcw[..., p1, p2]
            det = (1 + 2 * self.c * g11) * (1 + 2 * self.c * g22) - (2 * self.c * g12) ** 2
            v = v + self.d0 * np.sum(det ** -1.5, axis=-1)
        return np.sum(ov, axis=1), np.sum(ov * (kin + v), axis=1)


def lowest(h: np.ndarray, s: np.ndarray, cond: float = 1e-11) -> float:
    """Lowest root of h c = E s c, dropping directions of s below cond * max."""
    w, v = np.linalg.eigh(s)
    keep = w > cond * w[-1]
    t = v[:, keep] / np.sqrt(w[keep])
    return float(np.linalg.eigvalsh(t.T @ h @ t)[0])


class SVM:
    """Stochastic variational selection of the Gaussians; ``energy`` is the bound."""

    def __init__(self, ecg: PionlessECG, b_min=0.2, b_max=12.0, trials=16, seed=0,
                 max_overlap=0.995):
        self.ecg, self.rng = ecg, np.random.default_rng(seed)
        self.b_min, self.b_max, self.trials = b_min, b_max, trials
        self.max_overlap = max_overlap
        self.mats = np.zeros((0, ecg.n, ecg.n))
        self.h = np.zeros((0, 0))
        self.s = np.zeros((0, 0))
        self.energy = math.inf

    def candidate(self) -> np.ndarray:
        b = np.exp(self.rng.uniform(math.log(self.b_min), math.log(self.b_max),
                                    len(self.ecg.pairs)))
        return self.ecg.matrix(1.0 / b**2)

    def _trial(self, a, k=None):
        """(energy, S, H) with A replacing function k (None: appended); energy inf when
        A nearly duplicates a function already there."""
        keep = np.arange(len(self.mats)) if k is None else np.delete(np.arange(len(self.mats)), k)
        s, h = self.s[np.ix_(keep, keep)], self.h[np.ix_(keep, keep)]
        s_row, h_row = self.ecg.elements(a, np.concatenate([self.mats[keep], a[None]]))
        s_self = s_row[-1]
        if len(keep) and np.max(np.abs(s_row[:-1]) / np.sqrt(s_self * np.diag(s))) > self.max_overlap:
            return math.inf, None, None  # nearly a duplicate: ill-conditions S
        s = np.block([[s, s_row[:-1, None]], [s_row[None, :-1], s_self]])
        h = np.block([[h, h_row[:-1, None]], [h_row[None, :-1], h_row[-1]]])
        try:
            e = lowest(h, s)
        except np.linalg.LinAlgError:
            return math.inf, None, None
        return e, s, h

    def _accept(self, a, e, s, h, k=None):
        mats = self.mats if k is None else np.delete(self.mats, k, axis=0)
        self.mats = np.concatenate([mats, a[None]])
        self.s, self.h, self.energy = s, h, e

    def grow(self, size: int, log=None) -> float:
        """Add functions until the basis has ``size``, each the best of ``trials``."""
        failures = 0
        while len(self.mats) < size:
            best = (math.inf, None, None, None)
            for _ in range(self.trials):
                a = self.candidate()
                e, s, h = self._trial(a)
                if e < best[0]:
                    best = (e, a, s, h)
            if best[1] is None:
                failures += 1
                if failures > 50:
                    raise RuntimeError(f"no admissible Gaussian after {failures} rounds of "
                                       f"{self.trials} at basis {len(self.mats)}: the width "
                                       f"range [{self.b_min}, {self.b_max}] fm is exhausted")
                continue
            self._accept(best[1], best[0], best[2], best[3])
            if log and len(self.mats) % 10 == 0:
                log(f"  basis {len(self.mats):4d}: E = {self.energy:.6f} MeV")
        return self.energy

    def refine(self, sweeps: int = 1, log=None) -> float:
        """Replace each function by a random candidate whenever that lowers E."""
        for sweep in range(sweeps):
            for k in range(len(self.mats)):
                for _ in range(max(1, self.trials // 2)):
                    a = self.candidate()
                    e, s, h = self._trial(a, k)
                    if e < self.energy:
                        self._accept(a, e, s, h, k)
            if log:
                log(f"  refinement {sweep + 1}: E = {self.energy:.6f} MeV")
        return self.energy

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussians' matrices (K, n, n) and the ground state's coefficients (K,),
        scaled so the normalized Gaussians sum to the wavefunction."""
        w, v = np.linalg.eigh(self.s)
        keep = w > 1e-11 * w[-1]
        t = v[:, keep] / np.sqrt(w[keep])
        _, u = np.linalg.eigh(t.T @ self.h @ t)
        c = t @ u[:, 0]
        return self.mats.copy(), c * np.sign(np.sum(c))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distvmc.ecg", description=__doc__.split("\n")[0])
    ap.add_argument("--nucleons", type=int, default=3, help="A = 2, 3 or 4")
    ap.add_argument("--cutoff", type=int, default=4, choices=sorted(CONSTANTS))
    ap.add_argument("--basis", type=int, default=100, help="number of Gaussians")
    ap.add_argument("--trials", type=int, default=16, help="random candidates per function")
    ap.add_argument("--refine", type=int, default=2, help="refinement sweeps")
    ap.add_argument("--b-max", type=float, default=None,
                    help="largest pair width in fm (default 40 for A = 2, else 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", metavar="FILE", default=None,
                    help="write the Gaussians and coefficients (.npz) for a wavefunction "
                         "factor {type: gaussian_sum, file: FILE}")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ecg = PionlessECG(args.nucleons, args.cutoff)
    b_max = args.b_max or (40.0 if args.nucleons == 2 else 12.0)
    svm = SVM(ecg, b_max=b_max, trials=args.trials, seed=args.seed)
    print(f"A = {args.nucleons}, Lambda = {args.cutoff} fm^-1, alpha = {ecg.alpha:+g}: "
          f"{args.basis} symmetrized correlated Gaussians", flush=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    svm.grow(args.basis, log=log)
    svm.refine(args.refine, log=log)
    print(f"E <= {svm.energy:.6f} MeV ({len(svm.mats)} functions, "
          f"{time.perf_counter() - t0:.0f} s)")
    if args.save:
        save(args.save, svm, args.cutoff)
        print(f"saved {args.save}")
    return 0


def save(path: str, svm: SVM, cutoff: int) -> None:
    """The basis and ground-state coefficients as .npz (read by the gaussian_sum factor)."""
    mats, coef = svm.state()
    np.savez(path, matrices=mats, coefficients=coef, nucleons=svm.ecg.a, cutoff=cutoff,
             energy=svm.energy)


if __name__ == "__main__":
    sys.exit(main())
