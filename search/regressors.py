"""Regressors from architecture features to accuracy: ridge regression, a small MLP and a Gaussian process.

Each kind has the same parts: ``fit(x, y, seed)`` on float tensors ``[N, F]`` and ``[N]``; ``predict(x)``,
one batched tensor computation returning float32 ``[M]``; ``settings`` (what was chosen, for people);
``state()``, plain data and tensors a predictor file saves (readable with ``torch.load(weights_only=True)``),
and ``from_state`` to rebuild it. Every fit is deterministic given its seed.

- :class:`Ridge`: a linear model of the one-hot features (each choice adds its own amount), the L2 weight
  chosen by 5-fold cross-validation on the training points only. Few parameters; suits a few hundred points.
- :class:`MLP`: two hidden layers, as Once-for-All's accuracy predictor (which has three of 400 units, fitted
  on 16k architectures; ours are smaller for the hundreds of points a CPU evaluates in an hour); full-batch
  Adam on standardised targets.
- :class:`GP`: the exact Gaussian process that Bayesian optimisation uses (:mod:`search.gp`: Matern-5/2,
  hyperparameters by marginal likelihood on a grid); its mean is the prediction.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from search.gp import GaussianProcess
from supernet.errors import UserError

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
FOLDS = 5
HIDDEN = (128, 128)
STEPS = 600
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
ROWS = 8192  # rows per step of the GP's prediction: its temporary is ROWS x training points


def _folds(count: int, seed: int) -> list[torch.Tensor]:
    """Indices of ``min(FOLDS, count)`` cross-validation folds of ``count`` points, shuffled by ``seed``."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return [order[k::min(FOLDS, count)] for k in range(min(FOLDS, count))]


def _solve_ridge(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, float]:
    """Weights and intercept minimising ``|x w + b - y|^2 + alpha |w|^2`` (the intercept is not penalised)."""
    x_mean, y_mean = x.mean(0), y.mean()
    centred = x - x_mean
    gram = centred.T @ centred + alpha * torch.eye(x.shape[1], dtype=x.dtype)
    weight = torch.linalg.solve(gram, centred.T @ (y - y_mean))
    return weight, float(y_mean - x_mean @ weight)


class Ridge:
    """``x @ weight + bias``, fitted in float64."""

    kind: ClassVar[str] = "ridge"

    def __init__(self, weight: torch.Tensor, bias: float, alpha: float):
        self.weight, self.bias, self.alpha = weight.double(), float(bias), float(alpha)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> "Ridge":
        x, y = x.double(), y.double()
        folds = _folds(len(x), seed)

        def validation_error(alpha: float) -> float:
            error = 0.0
            for held in folds:
                kept = torch.ones(len(x), dtype=torch.bool)
                kept[held] = False
                weight, bias = _solve_ridge(x[kept], y[kept], alpha)
                error += float(((x[held] @ weight + bias - y[held]) ** 2).sum())
            return error

        alpha = min(ALPHAS, key=validation_error)  # the first (least regularised) on a tie
        return cls(*_solve_ridge(x, y, alpha), alpha)

    @property
    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "alpha_grid": list(ALPHAS), "chosen_by": f"{FOLDS}-fold cross-validation"}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() @ self.weight + self.bias).float()

    def state(self) -> dict[str, Any]:
        return {"weight": self.weight, "bias": self.bias, "alpha": self.alpha}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Ridge":
        return cls(state["weight"], state["bias"], state["alpha"])


def _network(features: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, 1))


class MLP:
    """A ReLU network on the features, predicting standardised accuracy."""

    kind: ClassVar[str] = "mlp"

    def __init__(self, network: nn.Sequential, hidden: tuple[int, ...], mean: float, scale: float):
        self.network, self.hidden, self.mean, self.scale = network.eval(), tuple(hidden), float(mean), float(scale)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> "MLP":
        x, y = x.float(), y.float()
        mean, scale = float(y.mean()), float(y.std(correction=0)) or 1.0
        with torch.random.fork_rng():  # a seeded initialisation that leaves the caller's generator alone
            torch.manual_seed(seed)
            network = _network(x.shape[1], HIDDEN)
        optimiser = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        target = ((y - mean) / scale)[:, None]
        network.train()
        for _ in range(STEPS):
            optimiser.zero_grad()
            nn.functional.mse_loss(network(x), target).backward()
            optimiser.step()
        return cls(network, HIDDEN, mean, scale)

    @property
    def settings(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "steps": STEPS, "learning_rate": LEARNING_RATE,
                "weight_decay": WEIGHT_DECAY, "optimiser": "Adam, full batch"}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.float())[:, 0] * self.scale + self.mean

    def state(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "mean": self.mean, "scale": self.scale,
                "weights": dict(self.network.state_dict())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "MLP":
        hidden = tuple(int(h) for h in state["hidden"])
        network = _network(state["weights"]["0.weight"].shape[1], hidden)
        network.load_state_dict(state["weights"])
        return cls(network, hidden, state["mean"], state["scale"])


class GP:
    """The posterior mean of :class:`search.gp.GaussianProcess` fitted on the training features."""

    kind: ClassVar[str] = "gp"

    def __init__(self, x: torch.Tensor, alpha: torch.Tensor, lengthscale: float, mean: float, scale: float):
        self.x, self.alpha = x.double(), alpha.double()
        self.lengthscale, self.mean, self.scale = float(lengthscale), float(mean), float(scale)
        # Predictions run in float32 (3x faster than float64 here; the encodings are small integers, so the
        # distances are exact, and the mean moves by about 1e-9): the training rows, their norms, the weights.
        self._x32, self._alpha32 = self.x.float(), self.alpha.float()
        self._known = (self._x32 * self._x32).sum(1)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> "GP":
        gp = GaussianProcess().fit(x.double().numpy(), y.double().numpy())  # deterministic: no seed needed
        return cls(torch.from_numpy(gp.x), torch.from_numpy(gp.alpha), gp.lengthscale, gp.mean, gp.scale)

    @property
    def settings(self) -> dict[str, Any]:
        return {"kernel": "Matern-5/2", "lengthscale": self.lengthscale,
                "chosen_by": "marginal likelihood on search.gp's grid"}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean, ``ROWS`` rows at a time: squared distances by the dot-product form (one GEMM
        onto the training norms), then Matern-5/2 as ``(1 + s + s^2 / 3) exp(-s)``, ``s = sqrt(5) d / l``, in
        place (no temporary per step over the ``[ROWS, training points]`` matrix; a search screens 20,000 per
        scenario)."""
        out, c = [], math.sqrt(5) / self.lengthscale
        for rows in x.float().split(ROWS):
            s = torch.addmm(self._known[None, :], rows, self._x32.T, alpha=-2.0)
            s.add_((rows * rows).sum(1)[:, None]).clamp_min_(0.0).sqrt_().mul_(c)
            k = torch.neg(s).exp_().mul_(s.mul(1.0 / 3.0).add_(1.0).mul_(s).add_(1.0))
            out.append(self.mean + self.scale * (k @ self._alpha32).double())
        return torch.cat(out).float() if out else torch.zeros(0)

    def state(self) -> dict[str, Any]:
        return {"x": self.x, "alpha": self.alpha, "lengthscale": self.lengthscale, "mean": self.mean,
                "scale": self.scale}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "GP":
        return cls(state["x"], state["alpha"], state["lengthscale"], state["mean"], state["scale"])


KINDS = (Ridge, MLP, GP)


def kind_named(name: str) -> type:
    """The regressor class of ``name`` (``ridge``, ``mlp``, ``gp``); a one-line error otherwise."""
    for kind in KINDS:
        if kind.kind == name:
            return kind
    raise UserError(f"no regressor kind {name!r}; the kinds are {', '.join(k.kind for k in KINDS)}")
