"""KL divergence between the true and the predicted colour distribution over quantised ab bins (Zhang et al. 2016)."""
from __future__ import annotations

import torch
from torch import nn

from bench.data.abbins import ABBins

from .base import check_reduction, reduce
from .registry import register_loss


@register_loss("kl")
class KLLoss(nn.Module):
    """KL(target ‖ prediction) per pixel, where the target is the soft-encoded true ab.

    Args:
        sigma: Gaussian width (ab units) of the soft encoding.
        neighbours: number of nearest bins that share each pixel's mass.
        rebalance: weight each pixel by the rarity of its colour (needs ``prior``).
        rebalance_lambda: mixing weight of the uniform distribution in the rebalancing prior.
        prior: empirical bin frequencies from the training set (``Q`` values summing to 1); smoothed over the ab
            plane (σ = 5, ``ABBins.smooth``) before the weights are computed.
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` over pixels (default), ``"sum"`` or ``"none"`` (``B×H×W``).
    """

    head = "bins"

    @classmethod
    def prior_bins(cls, params: dict) -> ABBins | None:
        """Registry metadata: with ``rebalance`` the loss needs the training images' colour prior over these bins
        (the trainer computes it and passes it as ``prior``); None otherwise."""
        if not params.get("rebalance"):
            return None
        return ABBins(sigma=params.get("sigma", 5.0), neighbours=params.get("neighbours", 5))

    @classmethod
    def check_args(cls, sigma: float = 5.0, neighbours: int = 5, rebalance_lambda: float = 0.5,
                   reduction: str = "mean", **_) -> None:
        """Registry metadata: refuse a soft-encoding, rebalancing or reduction setting before the loss is built.

        Args:
            sigma, neighbours, rebalance_lambda, reduction: as for the class; other parameters are ignored.
        """
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if not neighbours >= 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours}")
        if not 0 <= rebalance_lambda <= 1:
            raise ValueError(f"rebalance_lambda must be in [0, 1], got {rebalance_lambda}")
        check_reduction(reduction)

    def __init__(
        self,
        sigma: float = 5.0,
        neighbours: int = 5,
        rebalance: bool = False,
        rebalance_lambda: float = 0.5,
        prior: torch.Tensor | None = None,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__()
        self.check_args(sigma=sigma, neighbours=neighbours, rebalance_lambda=rebalance_lambda, reduction=reduction)
        self.bins = ABBins(sigma=sigma, neighbours=neighbours)
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.rebalance = rebalance
        if rebalance:
            if prior is None:
                raise ValueError("kl with rebalance=True needs the training set's colour prior")
            # the prior smoothed with σ = 5 (Zhang et al. 2016), then w ∝ ((1-λ) p̃ + λ/Q)^-1
            self.register_buffer("class_weights", self.bins.class_weights(prior, rebalance_lambda))
        else:
            self.class_weights = None

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, **ctx) -> torch.Tensor:
        """``pred``: ``B×Q×H×W`` logits; ``target_ab``: ``B×2×H×W`` true ab in Lab units."""
        if pred.shape[1] != self.bins.n_bins:
            raise ValueError(f"kl expects {self.bins.n_bins} bin logits, got {pred.shape[1]} channels")
        with torch.no_grad():
            idx, t = self.bins.encode_sparse(target_ab)  # the target has only k non-zero bins per pixel
        logits = pred.float()
        logp_at = logits.gather(1, idx) - torch.logsumexp(logits, dim=1, keepdim=True)
        # Σ t log t is constant in the prediction but makes the value a true KL (zero at a perfect match).
        kl = (t * (torch.log(t.clamp_min(1e-12)) - logp_at)).sum(dim=1)
        if self.class_weights is not None:
            kl = kl * self.class_weights.to(pred.device)[idx[:, 0]]  # weight of the nearest bin
        return self.loss_weight * reduce(kl, self.reduction)
