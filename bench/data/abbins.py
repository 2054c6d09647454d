"""Quantised ab colour space for the KL loss (Zhang et al. 2016): in-gamut bins, soft encoding, prior, annealed mean.

The bins are the cells of a regular grid of step 10 on the ab plane whose centre is the nearest grid point to at
least one sRGB colour: we convert every colour of a 64-level-per-channel sRGB cube (262,144 colours) to Lab and
keep the cells that are hit. That gives the bin set below (its size is printed by ``python -m bench.data.abbins``): 261
bins, exactly the cells hit by the 16.8 M 8-bit sRGB colours (tests/test_abbins.py). The continuous gamut reaches one
more cell, (20, -80), only through colours that no 8-bit value gives. Zhang et al. report 313 bins: they kept every
cell in gamut for some L on the whole Lab gamut, a looser test.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from bench.data.colour import rgb_to_lab

GRID_STEP = 10.0
ANNEAL_T = 0.38
#: σ (ab units) of the Gaussian that smooths the empirical prior before rebalancing (Zhang et al. 2016: 5).
PRIOR_SIGMA = 5.0


@lru_cache(maxsize=4)
def _gamut_bins(levels: int, step: float) -> torch.Tensor:
    v = torch.linspace(0, 1, levels)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    rgb = torch.stack([r, g, b]).reshape(3, -1, 1, 1).permute(1, 0, 2, 3)  # N×3×1×1
    ab = rgb_to_lab(rgb)[:, 1:, 0, 0]
    idx = torch.round(ab / step).to(torch.int64)
    uniq = torch.unique(idx, dim=0)
    return uniq.to(torch.float32) * step


def gamut_bins(levels: int = 64, step: float = GRID_STEP) -> torch.Tensor:
    """The Q×2 ab centres of the in-gamut bins (sorted by a then b)."""
    return _gamut_bins(levels, step).clone()


class ABBins:
    """Encode ab into soft distributions over the in-gamut bins and decode distributions back to ab.

    Args:
        sigma: standard deviation (ab units) of the Gaussian used for soft encoding (Zhang et al.: 5).
        neighbours: how many nearest bins share each pixel's mass (Zhang et al.: 5).
    """

    def __init__(self, sigma: float = 5.0, neighbours: int = 5, step: float = GRID_STEP):
        if sigma <= 0 or neighbours < 1:
            raise ValueError("sigma must be > 0 and neighbours >= 1")
        self.centres = gamut_bins(step=step)
        self.step = step
        self._cand: dict[int, torch.Tensor] = {}
        self.sigma = sigma
        self.neighbours = min(neighbours, len(self.centres))

    @property
    def n_bins(self) -> int:
        return len(self.centres)

    def _flat(self, ab: torch.Tensor) -> torch.Tensor:
        return ab.permute(0, 2, 3, 1).reshape(-1, 2).float()

    def _candidates(self, k: int) -> torch.Tensor:
        """For every point g of a lookup grid over [-130, 130]² (spacing = the bin step s), the bins that can be among
        the k nearest of any ab that rounds to g (so lies within s/√2 of it): all bins closer to g than
        d_k(g) + √2·s (triangle inequality, twice), padded with -1."""
        if k not in self._cand:
            g = torch.arange(-130.0, 131.0, self.step)
            ga, gb = torch.meshgrid(g, g, indexing="ij")
            grid = torch.stack([ga.flatten(), gb.flatten()], 1)
            d = torch.cdist(grid, self.centres)
            radius = d.topk(k, dim=1, largest=False).values[:, -1:] + 2**0.5 * self.step + 1e-3
            inside = d <= radius
            width = int(inside.sum(1).max())
            order = torch.where(inside, d, torch.full_like(d, float("inf"))).argsort(dim=1)[:, :width]
            self._cand[k] = torch.where(inside.gather(1, order), order, torch.full_like(order, -1))
        return self._cand[k]

    def nearest(self, ab: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances and indices of the k nearest bins of each pixel of ``B×2×H×W`` ab, each ``N×k``,
        nearest first. Exact for |a|, |b| ≤ 130 (all of sRGB); only the candidates of a lookup grid are compared."""
        flat = self._flat(ab)
        cand = self._candidates(k).to(flat.device)
        centres = self.centres.to(flat.device)
        n_side = int(round(len(cand) ** 0.5))
        cell = torch.round((flat.clamp(-130, 130) + 130.0) / self.step).long()
        ci = cand[cell[:, 0] * n_side + cell[:, 1]]  # N×C candidate bins (-1 = padding)
        d2 = (flat[:, None, :] - centres[ci.clamp_min(0)]).square().sum(-1)
        d2 = torch.where(ci >= 0, d2, torch.full_like(d2, float("inf")))
        d, j = torch.topk(d2, k, dim=1, largest=False)
        return d, ci.gather(1, j)

    def encode_sparse(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft encoding as (bin indices, weights), each ``B×k×H×W`` (weights sum to 1 over k)."""
        B, _, H, W = ab.shape
        d2, idx = self.nearest(ab, self.neighbours)
        w = torch.exp(-(d2 - d2[:, :1]) / (2 * self.sigma**2))  # shift by the nearest for numerical safety
        w = w / w.sum(dim=1, keepdim=True)
        to_map = lambda x: x.reshape(B, H, W, -1).permute(0, 3, 1, 2)  # noqa: E731
        return to_map(idx), to_map(w)

    def encode(self, ab: torch.Tensor) -> torch.Tensor:
        """Soft-encode ab (``B×2×H×W``) into dense ``B×Q×H×W`` distributions (each pixel sums to 1)."""
        idx, w = self.encode_sparse(ab)
        out = torch.zeros(ab.shape[0], self.n_bins, *ab.shape[2:], device=ab.device)
        return out.scatter_(1, idx, w)

    def hard_index(self, ab: torch.Tensor) -> torch.Tensor:
        """Index of the nearest bin for each pixel, ``B×H×W``."""
        B, _, H, W = ab.shape
        _, idx = self.nearest(ab, 1)
        return idx[:, 0].reshape(B, H, W)

    def decode(self, logits: torch.Tensor, temperature: float = ANNEAL_T) -> torch.Tensor:
        """Annealed mean: ab = Σ_q softmax(logits / T)_q · centre_q, ``B×Q×H×W`` → ``B×2×H×W``.

        ``temperature=1`` gives the plain mean, ``0`` the mode (the centre of the most probable bin).
        """
        if temperature == 0:
            return self.centres.to(logits.device)[logits.argmax(1)].permute(0, 3, 1, 2)
        p = torch.softmax(logits.float() / temperature, dim=1)
        return torch.einsum("bqhw,qc->bchw", p, self.centres.to(logits.device))

    def neutral_logits(self, temperature: float = ANNEAL_T) -> torch.Tensor:
        """Logits (``Q``) that :meth:`decode` at ``temperature`` turns into ab = 0 (grey), spread over every bin.

        Equal logits decode to the mean of the bin centres, ab ≈ (15.6, 6.0), an orange cast. Among the
        distributions whose mean is 0 this one has the largest entropy: p_q ∝ exp(λ·c_q) (exponential tilting of
        the uniform one), with λ found by Newton's method on log Σ exp(λ·c_q), whose gradient is the mean.
        """
        c = self.centres.double()
        lam = torch.zeros(2, dtype=torch.float64)
        for _ in range(50):
            w = torch.softmax(c @ lam, 0)
            mean = w @ c
            if mean.abs().max() < 1e-10:
                break
            cov = (c - mean).T @ ((c - mean) * w[:, None])
            lam = lam - torch.linalg.solve(cov, mean)
        return (temperature * (c @ lam)).float()

    def empirical_prior(self, ab_batches) -> torch.Tensor:
        """Empirical bin frequencies p (sums to 1) from an iterable of ``B×2×H×W`` ab tensors."""
        counts = torch.zeros(self.n_bins, dtype=torch.float64)
        for ab in ab_batches:
            idx = self.hard_index(ab).flatten().cpu()
            counts += torch.bincount(idx, minlength=self.n_bins).double()
        if counts.sum() == 0:
            raise ValueError("cannot estimate a colour prior from no pixels")
        return (counts / counts.sum()).float()

    def smooth(self, prior: torch.Tensor, sigma: float = PRIOR_SIGMA) -> torch.Tensor:
        """The prior smoothed over the ab plane with a Gaussian of ``sigma`` (ab units), as Zhang et al. 2016 smooth
        the empirical distribution before rebalancing (σ = 5): p̃_q ∝ Σ_r p_r exp(−|c_q − c_r|² / 2σ²)."""
        c = self.centres.double()
        kernel = torch.exp(-torch.cdist(c, c).square() / (2 * sigma**2))
        out = kernel @ prior.double()
        return (out / out.sum()).float()

    def class_weights(self, prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
        """The KL loss's rebalancing weights of each bin: :meth:`rebalance_weights` of the smoothed prior."""
        return self.rebalance_weights(self.smooth(torch.as_tensor(prior)), lam)

    @staticmethod
    def rebalance_weights(prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
        """Class weights w ∝ ((1-λ) p + λ/Q)^-1, scaled so that E_p[w] = Σ_q p_q w_q = 1 (Zhang et al. 2016)."""
        if not 0.0 <= lam <= 1.0:
            raise ValueError("rebalancing lambda must lie in [0, 1]")
        prior = prior.double() / prior.sum()
        w = 1.0 / ((1.0 - lam) * prior + lam / len(prior))
        w = w / (prior * w).sum()
        return w.float()


if __name__ == "__main__":  # pragma: no cover
    c = gamut_bins()
    print(f"{len(c)} in-gamut ab bins on a grid of {GRID_STEP:g} (a in [{c[:,0].min():g}, {c[:,0].max():g}], "
          f"b in [{c[:,1].min():g}, {c[:,1].max():g}])")
