"""A small exact Gaussian process for Bayesian optimisation over architecture encodings.

Why not BoTorch/GPyTorch: searches here see tens to a few hundred points, where an exact GP is a Cholesky
of a few hundred rows; hyperparameters chosen by the marginal likelihood on a fixed grid keep every fit
deterministic (so a resumed search replays exactly) and need no optimiser, no extra install and no torch
autograd. Matern-5/2 kernel on the scaled encoding, constant mean, targets standardised.
"""
from __future__ import annotations

import math

import numpy as np

LENGTHSCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
NOISES = (1e-4, 1e-3, 1e-2, 1e-1)


ROWS = 64  # rows of ``a`` per step of :func:`matern52`: its temporary is ROWS x len(b) x features, not len(a) x ...


def matern52(a: np.ndarray, b: np.ndarray, lengthscale: float) -> np.ndarray:
    """The Matern-5/2 covariance of every row of ``a`` with every row of ``b``.

    Computed ``ROWS`` rows of ``a`` at a time: each entry is the same sum over the same differences as in one
    broadcast, so the result is bit-identical, but 800 points of 156 features need 65 MB, not 800 MB.
    """
    d = np.concatenate([np.sqrt(np.maximum(((a[i:i + ROWS, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))
                        for i in range(0, len(a), ROWS)] or [np.zeros((0, len(b)))]) / lengthscale
    return (1 + math.sqrt(5) * d + 5.0 / 3.0 * d * d) * np.exp(-math.sqrt(5) * d)


class GaussianProcess:
    """``fit(X, y)`` then ``predict(X*) -> (mean, std)`` in the units of ``y``."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GaussianProcess":
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.x = x
        self.mean, self.scale = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.mean) / self.scale
        dim_scale = math.sqrt(max(x.shape[1], 1))
        best = None
        for ls in LENGTHSCALES:
            base = matern52(x, x, ls * dim_scale)
            for noise in NOISES:
                try:
                    chol = np.linalg.cholesky(base + (noise + 1e-9) * np.eye(len(x)))
                except np.linalg.LinAlgError:
                    continue
                alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
                lml = -0.5 * z @ alpha - np.log(np.diag(chol)).sum()
                if best is None or lml > best[0]:
                    best = (lml, ls * dim_scale, chol, alpha)
        if best is None:
            raise ValueError("no kernel setting gave a positive-definite covariance")
        _, self.lengthscale, self.chol, self.alpha = best
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = matern52(np.asarray(x, dtype=np.float64), self.x, self.lengthscale)
        mean = k @ self.alpha
        v = np.linalg.solve(self.chol, k.T)
        var = np.maximum(1.0 - (v * v).sum(0), 1e-12)
        return self.mean + self.scale * mean, self.scale * np.sqrt(var)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def expected_improvement(mean: np.ndarray, std: np.ndarray, incumbent: float, xi: float = 0.0) -> np.ndarray:
    """Expected amount by which a point beats ``incumbent`` (maximisation)."""
    gap = mean - incumbent - xi
    z = gap / std
    return gap * normal_cdf(z) + std * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
