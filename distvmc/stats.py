"""Monte Carlo statistics from sums, so that ranks can add their parts.

Samples arrive as an array of shape (M, W): M measurements along each of W
independent Markov chains (walkers). Each rank reduces its own samples to a
short vector of sums (:func:`local_sums`); the communicator adds the vectors
over ranks; :func:`from_sums` turns the total into a :class:`Stats`.

The error bar accounts for autocorrelation by block means: each chain is cut
into ``blocks`` consecutive blocks (one block per chain when there are enough
chains), and the error is the standard error of the block means. With one
measurement per chain the samples are independent and the error is the naive
one. tau is the integrated autocorrelation time in units of measurements,
estimated from the block-mean variance; R-hat compares between-chain and
within-chain variance (1 for converged chains).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_BLOCKS = 32  # total blocks wanted for the error estimate


@dataclass
class Stats:
    mean: float
    error: float
    variance: float
    tau: float
    rhat: float
    n: int
    nonfinite: int = 0

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
        are excluded from every sum and counted.
      blocks: blocks per chain (from :func:`blocks_per_chain`).

    Returns:
      float64 vector [n, sum e, sum e^2, n_blocks, sum bm, sum bm^2,
      sum of within-chain variances, n_chains, n_nonfinite].
    """
    e = np.asarray(e, dtype=np.float64)
    finite = np.isfinite(e)
    bad = int(e.size - finite.sum())
    ef = np.where(finite, e, 0.0)
    n = float(finite.sum())
    s1, s2 = ef.sum(), (ef * ef).sum()
    m, w = e.shape
    if bad or m < 2:
        bm = np.zeros(0)
        within = 0.0
        nch = 0.0
    else:
        size = m // blocks
        bm = e[: size * blocks].reshape(blocks, size, w).mean(axis=1).ravel()
        within = float(e.var(axis=0, ddof=1).sum())
        nch = float(w)
    return np.array([n, s1, s2, float(bm.size), bm.sum(), (bm * bm).sum(), within, nch,
                     float(bad)])


def from_sums(s: np.ndarray, m: int) -> Stats:
    """Statistics from summed :func:`local_sums` vectors of all ranks."""
    n, s1, s2, nb, b1, b2, within, nch, bad = (float(v) for v in s)
    if n == 0:
        return Stats(float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
                     0, int(bad))
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0)
    if m < 2 or nb < 2:
        error = np.sqrt(var / max(n - 1.0, 1.0))
        tau, rhat = 0.0, float("nan")
    else:
        bmean = b1 / nb
        bvar = max(b2 / nb - bmean * bmean, 0.0) * nb / (nb - 1.0)
        error = np.sqrt(bvar / nb)
        block_len = n / nb
        tau = max(0.0, 0.5 * (block_len * bvar / var - 1.0)) if var > 0 else 0.0
        w_within = within / nch if nch else 0.0
        # Gelman-Rubin: pooled variance over the mean within-chain variance.
        rhat = float(np.sqrt(var / w_within)) if w_within > 0 else float("nan")
    return Stats(mean, float(error), var, float(tau), rhat, int(n), int(bad))


def summarize(e: np.ndarray, comm=None) -> Stats:
    """Statistics of samples of shape (M, W) over all ranks of ``comm``."""
    m, w = np.shape(e)
    w_global = w * (comm.size if comm is not None else 1)
    s = local_sums(e, blocks_per_chain(m, w_global))
    if comm is not None:
        s = comm.allreduce(s)
    return from_sums(s, m)
