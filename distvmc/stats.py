"""Monte Carlo statistics from sums, so that ranks can add their parts.

Samples arrive as an array of shape (M, W): M measurements along each of W
independent Markov chains (walkers). Each rank reduces its own samples to a
short vector of sums (:func:`local_sums`); the communicator adds the vectors
over ranks (one allreduce); :func:`from_sums` turns the total into a
:class:`Stats`. Every statistic is therefore the same, up to rounding, however
the walkers are split over ranks.

Mean and variance
    ``mean`` and ``variance`` (population variance, ddof 0) use every finite
    sample; ``n`` counts them.

Error bar (block means)
    Each chain is cut into ``blocks`` consecutive blocks of ``L = M // blocks``
    measurements (:func:`blocks_per_chain`: one block per chain when there are
    at least 32 chains, otherwise enough blocks for 32 in total; a remainder of
    ``M % blocks`` measurements at the end of each chain is left out of the
    blocks). The error is the standard error of the block means,
    ``error = sqrt(var_B / N_B)`` with ``var_B`` their sample variance (ddof 1)
    and ``N_B`` their number over all ranks.

Autocorrelation time (convention)
    ``tau`` is the integrated autocorrelation time in units of measurements in
    the "statistical inefficiency" convention used by NetKet and emcee::

        tau = 1 + 2 * sum_{t>=1} rho_t,   so that   var(mean) = tau * sigma^2 / n.

    It is 1 for independent samples and ``(1 + phi) / (1 - phi)`` for an AR(1)
    process ``x_t = phi x_{t-1} + noise``. (The other common convention,
    ``1/2 + sum rho_t``, is half of this.) It is estimated from the block-mean
    variance, ``tau = L * var_B / sigma^2``, with ``sigma^2`` the sample
    variance (ddof 1) of the same chains, so that
    ``error^2 = tau * sigma^2 / (N_B * L)`` exactly. Blocks shorter than a few
    tau underestimate it (and the error).

One measurement per chain (M = 1)
    The chains are independent, each block is a single sample, the error is the
    naive ``sqrt(s^2 / n)`` (s^2 with ddof 1) and ``tau`` is exactly 1. R-hat
    needs M >= 2 and is NaN.

R-hat
    ``sqrt(pooled variance / mean within-chain variance)`` (Gelman-Rubin); 1
    for converged chains, larger when chains disagree. NaN with fewer than two
    usable chains or M < 2.

Non-finite values (NaN, inf)
    ``nonfinite`` counts non-finite samples; they are left out of ``mean``,
    ``variance`` and ``n``. A chain (walker) containing any non-finite value is
    left out of the block statistics (``error``, ``tau``) and the R-hat sums,
    and counted in ``bad_chains``; the other chains are used as usual. So the
    error is that of the mean of the complete chains -- marginally conservative
    for the reported mean, which also keeps the finite samples of bad chains.
    If fewer than two blocks remain over all ranks, ``error`` and ``tau`` are
    NaN: there is no honest error bar, and none is invented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_BLOCKS = 32  # total blocks wanted for the error estimate

NAN = float("nan")

# Layout of the local_sums vector (every entry is a plain sum over ranks).
(N, S1, S2, NONFINITE, BAD_CHAINS, N_GOOD, S1_GOOD, S2_GOOD, WITHIN, N_CHAINS,
 N_BLOCKS, B1, B2, N_BLOCKED) = range(14)
N_SUMS = 14


@dataclass
class Stats:
    mean: float
    error: float
    variance: float
    tau: float
    rhat: float
    n: int
    nonfinite: int = 0
    bad_chains: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.6f} ± {self.error:.6f}"


def blocks_per_chain(m: int, w_global: int) -> int:
    """How many blocks to cut each chain of length m into (same on every rank)."""
    if m <= 1:
        return 1
    return int(min(m, max(1, -(-MIN_BLOCKS // max(w_global, 1)))))


def local_sums(e: np.ndarray, blocks: int) -> np.ndarray:
    """Sums over this rank's samples.

    Args:
      e: local energies (or any observable), shape (M, W). Non-finite values
        are excluded from every sum and counted; chains holding one are
        excluded from the chain and block sums and counted.
      blocks: blocks per chain (from :func:`blocks_per_chain`).

    Returns:
      float64 vector of length ``N_SUMS``, laid out as
      [n, sum e, sum e^2, n_nonfinite, n_bad_chains,                (finite samples)
       n_good, sum e, sum e^2, sum of within-chain variances, n_chains,  (good chains)
       n_blocks, sum bm, sum bm^2, samples in blocks]                 (good chains' blocks)
      Vectors of different ranks are added element-wise.
    """
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"samples must have shape (M, W), got {e.shape}")
    m, w = e.shape
    finite = np.isfinite(e)
    ef = np.where(finite, e, 0.0)
    good = finite.all(axis=0)  # chains without any non-finite value
    g = e[:, good]
    size = m // blocks
    bm = g[: size * blocks].reshape(blocks, size, g.shape[1]).mean(axis=1).ravel()
    within = float(g.var(axis=0, ddof=1).sum()) if m >= 2 and g.shape[1] else 0.0
    s = np.zeros(N_SUMS)
    s[N] = finite.sum()
    s[S1] = ef.sum()
    s[S2] = (ef * ef).sum()
    s[NONFINITE] = e.size - finite.sum()
    s[BAD_CHAINS] = w - good.sum()
    s[N_GOOD] = g.size
    s[S1_GOOD] = g.sum()
    s[S2_GOOD] = (g * g).sum()
    s[WITHIN] = within
    s[N_CHAINS] = g.shape[1]
    s[N_BLOCKS] = bm.size
    s[B1] = bm.sum()
    s[B2] = (bm * bm).sum()
    s[N_BLOCKED] = bm.size * size
    return s


def from_sums(s: np.ndarray, m: int) -> Stats:
    """Statistics from summed :func:`local_sums` vectors of all ranks.

    ``m`` is the number of measurements per chain (the same on every rank).
    """
    s = np.asarray(s, dtype=np.float64)
    n, nonfinite, bad_chains = s[N], int(s[NONFINITE]), int(s[BAD_CHAINS])
    if n == 0:
        return Stats(NAN, NAN, NAN, NAN, NAN, 0, nonfinite, bad_chains)
    mean = s[S1] / n
    var = max(s[S2] / n - mean * mean, 0.0)

    error = tau = NAN
    nb = s[N_BLOCKS]
    if nb >= 2:
        bmean = s[B1] / nb
        bvar = max(s[B2] / nb - bmean * bmean, 0.0) * nb / (nb - 1.0)
        error = float(np.sqrt(bvar / nb))
        block_len = s[N_BLOCKED] / nb
        ng = s[N_GOOD]
        gmean = s[S1_GOOD] / ng
        gvar = max(s[S2_GOOD] / ng - gmean * gmean, 0.0) * ng / (ng - 1.0)
        # Zero variance (e.g. an exact eigenstate): nothing fluctuates, error 0,
        # and tau = 1 by convention (no inefficiency to report).
        tau = float(block_len * bvar / gvar) if gvar > 0 else 1.0

    rhat = NAN
    nch = s[N_CHAINS]
    if m >= 2 and nch >= 2:
        ng = s[N_GOOD]
        gmean = s[S1_GOOD] / ng
        pooled = max(s[S2_GOOD] / ng - gmean * gmean, 0.0)
        w_within = s[WITHIN] / nch
        # Gelman-Rubin: pooled variance over the mean within-chain variance.
        rhat = float(np.sqrt(pooled / w_within)) if w_within > 0 else NAN
    return Stats(float(mean), error, float(var), tau, rhat, int(n), nonfinite, bad_chains)


def summarize(e: np.ndarray, comm=None) -> Stats:
    """Statistics of samples of shape (M, W) over all ranks of ``comm``."""
    m, w = np.shape(e)
    w_global = w * (comm.size if comm is not None else 1)
    s = local_sums(e, blocks_per_chain(m, w_global))
    if comm is not None:
        s = comm.allreduce(s)
    return from_sums(s, m)
