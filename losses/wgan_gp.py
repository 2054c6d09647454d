"""Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) as an adversarial term: ``"mse+0.01*wgan_gp"``.

The loss owns a small conditional PatchGAN-style critic and its Adam optimiser. The critic sees the Lab image
(L/100, ab/110) and scores every receptive-field patch; an image's score is the mean over its patches. Per training
step, before the generator's update, the training step (``bench.training.loop.TrainStep``) calls the loss's hook
:meth:`WGANGPLoss.extra_step` (``critic_steps`` Adam steps of the critic on the step's batch: real = the true ab, fake =
the detached prediction, the same L), then the generator minimises the term's value

    wgan_gp = loss_weight · (D(L, ab_true) − D(L, ab_pred))

(the critic's Wasserstein estimate; only −D(L, ab_pred) depends on the prediction, so this is the usual generator loss
−D(fake) shifted to read as a distance; it can be negative while the critic is poor). The critic minimises

    D(fake) − D(real) + gp_weight · (‖∇_x̂ D(L, x̂)‖₂ − 1)²,   x̂ = ε ab_true + (1 − ε) ab_pred, ε ~ U(0, 1) per image,

with the gradient taken with respect to the (normalised) ab of x̂; L is a condition, the same on both sides.
The critic's weights, its optimiser state and its update count are part of the loss's ``state_dict`` (checkpoints).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .base import AB_SCALE, check_reduction, reduce
from .registry import register_loss


class PatchCritic(nn.Module):
    """Conditional PatchGAN-style critic: (L, ab) → one score per patch (``B×1×h×w``); no normalisation layers
    (batch norm would make each image's score depend on the batch, which the gradient penalty forbids).

    Args:
        width: channels of the first layer (doubled at each of the three stride-2 layers' outputs after it).
        seed: seed of the initialisation (a private generator: the same critic whatever the global RNG).
    """

    def __init__(self, width: int = 64, seed: int = 0):
        super().__init__()
        w = int(width)
        if w < 1:
            raise ValueError(f"critic_width must be at least 1, got {width}")
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 3, padding=1),
        )
        g = torch.Generator().manual_seed(seed)
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                with torch.no_grad():
                    nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu", generator=g)
                    m.bias.zero_()

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """``L``: ``B×1×H×W`` in [0, 100]; ``ab``: ``B×2×H×W`` already divided by ``AB_SCALE``."""
        return self.net(torch.cat([L / 100.0, ab], dim=1))


def image_scores(critic: nn.Module, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """One critic score per image (``B``): the mean of its patch scores."""
    return critic(L, ab).flatten(1).mean(dim=1)


def gradient_penalty(critic: nn.Module, L: torch.Tensor, real_ab: torch.Tensor, fake_ab: torch.Tensor,
                     eps: torch.Tensor) -> torch.Tensor:
    """(‖∇_x̂ D(L, x̂)‖₂ − 1)² per image (``B``), x̂ = eps·real + (1 − eps)·fake.

    Args:
        critic: ``critic(L, ab)`` → patch scores.
        L: the condition, ``B×1×H×W``.
        real_ab, fake_ab: normalised ab, ``B×2×H×W`` (no gradient needed).
        eps: interpolation weights, ``B`` (or broadcastable to ``B×1×1×1``).
    """
    eps = eps.reshape(-1, 1, 1, 1).to(real_ab)
    x = (eps * real_ab.detach() + (1 - eps) * fake_ab.detach()).requires_grad_(True)
    # Scores of different images do not interact, so the gradient of their sum is each image's own gradient.
    (grad,) = torch.autograd.grad(image_scores(critic, L, x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2)


#: Bounds of the critic's settings: each step trains it ``critic_steps`` times, its convolutions are
#: ``critic_width`` … ``4 × critic_width`` channels wide.
MAX_CRITIC_STEPS, MAX_CRITIC_WIDTH = 100, 1024


@register_loss("wgan_gp")
class WGANGPLoss(nn.Module):
    """Adversarial WGAN-GP term with its own critic; add it to a pixel loss (``"mse+0.01*wgan_gp"``).

    Args:
        gp_weight: weight of the gradient penalty in the critic's loss (Gulrajani et al.: 10).
        critic_steps: critic updates per generator update (on the same batch). Default 1, our choice to keep a step
            cheap; Gulrajani et al. use 5 (``loss_params={"critic_steps": 5}``).
        critic_lr: the critic's Adam learning rate (betas 0, 0.9 as in Gulrajani et al.).
        critic_width: channels of the critic's first layer.
        critic_seed: seed of the critic's initialisation (the trainer passes the cell's training seed).
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (one value per image, ``B×1×1×1``).
    """

    head = "ab"
    #: the value is a Wasserstein estimate: it can be negative (tests skip the "loss ≥ 0" check for such losses)
    signed = True

    @classmethod
    def check_args(cls, gp_weight: float = 10.0, critic_steps: int = 1, critic_lr: float = 1e-4, critic_width: int = 64,
                   reduction: str = "mean", **_) -> None:
        """Registry metadata: refuse a parameter value of the critic or the reduction before the loss is built.

        Args:
            gp_weight, critic_steps, critic_lr, critic_width, reduction: as for the class; others are ignored.
        """
        if not gp_weight >= 0:
            raise ValueError(f"gp_weight must be non-negative, got {gp_weight}")
        if int(critic_steps) != critic_steps or not 1 <= critic_steps <= MAX_CRITIC_STEPS:
            raise ValueError(f"critic_steps must be a whole number from 1 to {MAX_CRITIC_STEPS}, got {critic_steps}")
        if not critic_lr > 0:
            raise ValueError(f"critic_lr must be positive, got {critic_lr}")
        if not 1 <= critic_width <= MAX_CRITIC_WIDTH:
            raise ValueError(f"critic_width must be from 1 to {MAX_CRITIC_WIDTH}, got {critic_width}")
        check_reduction(reduction)

    def __init__(self, gp_weight: float = 10.0, critic_steps: int = 1, critic_lr: float = 1e-4,
                 critic_width: int = 64, critic_seed: int = 0, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.check_args(gp_weight=gp_weight, critic_steps=critic_steps, critic_lr=critic_lr, critic_width=critic_width)
        self.reduction = check_reduction(reduction)
        self.gp_weight = float(gp_weight)
        self.critic_steps = int(critic_steps)
        self.loss_weight = loss_weight
        self.critic = PatchCritic(critic_width, critic_seed)
        # The critic's parameters take gradients only inside extra_step(): the generator's backward pass goes
        # through the critic to the prediction without computing (and accumulating) its weight gradients.
        self.critic.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, betas=(0.0, 0.9))
        self.updates = 0

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, L=None, **ctx) -> torch.Tensor:
        """``pred``, ``target_ab``: ``B×2×H×W`` ab in Lab units; ``L``: ``B×1×H×W``."""
        L, real, fake = self._inputs(pred, target_ab, L)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            with torch.no_grad():
                d_real = image_scores(self.critic, L, real)
            w = d_real - image_scores(self.critic, L, fake)
        return self.loss_weight * reduce(w.view(-1, 1, 1, 1), self.reduction)

    def extra_step(self, pred: torch.Tensor, target_ab: torch.Tensor, L=None, **ctx) -> dict[str, float]:
        """Train the critic for ``critic_steps`` Adam steps on this batch (the prediction is detached).

        Returns the last step's critic loss, gradient penalty and Wasserstein estimate D(real) − D(fake)
        (as 0-dim tensors, so that a GPU is not synchronised here).
        """
        L, real, fake = self._inputs(pred.detach(), target_ab, L)
        self.critic.requires_grad_(True)
        try:
            with torch.autocast(device_type=pred.device.type, enabled=False):  # the penalty's double backward in fp32
                for _ in range(self.critic_steps):
                    eps = torch.rand(len(real), device=real.device)
                    w = image_scores(self.critic, L, real) - image_scores(self.critic, L, fake)
                    gp = gradient_penalty(self.critic, L, real, fake, eps)
                    loss = (-w + self.gp_weight * gp).mean()
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    self.updates += 1
        finally:
            self.critic.requires_grad_(False)
        return {"critic_loss": loss.detach(), "gradient_penalty": gp.mean().detach(), "wasserstein": w.mean().detach()}

    def _inputs(self, pred, target_ab, L):
        if L is None:
            raise ValueError("the wgan_gp loss needs the lightness (its critic is conditioned on L): "
                             "call loss(pred, target_ab, L=L)")
        if pred.shape != target_ab.shape or pred.shape[1] != 2:
            raise ValueError(f"wgan_gp expects ab predictions B×2×H×W like the target, got {tuple(pred.shape)} "
                             f"and {tuple(target_ab.shape)}")
        return L.float(), target_ab.float() / AB_SCALE, pred.float() / AB_SCALE

    # The optimiser and the update count ride along in state_dict() (nn.Module's "extra state"), so that a checkpoint
    # of the loss resumes the critic exactly.
    def get_extra_state(self) -> dict:
        # a copy: Adam's state_dict() holds its live moment tensors, which a loaded twin would otherwise share
        return {"optimizer": copy.deepcopy(self.optimizer.state_dict()), "updates": self.updates}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
