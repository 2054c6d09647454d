"""The WGAN-GP term (``losses.wgan_gp``): its gradient penalty against autograd references on toy critics, and the
critic's training inside the loss."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.data.colour import split_lab
import losses
from losses.wgan_gp import PatchCritic, gradient_penalty, image_scores


class LinearCritic(nn.Module):
    """D(L, ab) = ⟨w, ab⟩ + ⟨v, L⟩ as a 1×1 "patch" map: ∇_ab of the image score is w, so the penalty is
    (‖w‖₂ − 1)² for every image, whatever the interpolation point."""

    def __init__(self, w: torch.Tensor, v: torch.Tensor):
        super().__init__()
        self.w, self.v = w, v

    def forward(self, L, ab):
        return ((ab * self.w).flatten(1).sum(1) + (L * self.v).flatten(1).sum(1)).view(-1, 1, 1, 1)


class ToyCritic(nn.Module):
    """A small non-linear critic with a spatial patch map (tanh: non-zero second derivatives)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, stride=2, padding=1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, L, ab):
        return self.c2(torch.tanh(self.c1(torch.cat([L / 100, ab], 1))))


@pytest.fixture(scope="module")
def batch(real_batch):
    rgb = real_batch[:3, :, :16, :16].float() / 255.0
    L, ab = split_lab(rgb)
    g = torch.Generator().manual_seed(1)
    fake = ab + 30 * torch.randn(ab.shape, generator=g)
    return L.double(), (ab / 110).double(), (fake / 110).double()


def test_penalty_of_a_linear_critic_is_closed_form(batch):
    L, real, fake = batch
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1, *real.shape[1:], generator=g, dtype=torch.float64) * 0.05
    critic = LinearCritic(w, torch.ones_like(L[:1]))
    gp = gradient_penalty(critic, L, real, fake, torch.rand(len(L), generator=g, dtype=torch.float64))
    torch.testing.assert_close(gp, torch.full((len(L),), (w.norm().item() - 1) ** 2, dtype=torch.float64))


def test_penalty_matches_a_per_image_jacobian_reference(batch):
    """Toy non-linear critic: each image's gradient from torch.autograd.functional.jacobian of its own score alone
    (no batching), its norm, (norm − 1)²; and the penalty's own gradient w.r.t. the critic's weights (the double
    backward the critic's update needs) against finite differences."""
    L, real, fake = batch
    critic = ToyCritic().double()
    eps = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    got = gradient_penalty(critic, L, real, fake, eps)
    want = []
    for i in range(len(L)):
        x = eps[i] * real[i : i + 1] + (1 - eps[i]) * fake[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda z: critic(L[i : i + 1], z).mean(), x)
        want.append((jac.norm() - 1) ** 2)
    torch.testing.assert_close(got, torch.stack(want))
    assert torch.autograd.gradcheck(
        lambda w: gradient_penalty(lambda l_, a: nn.functional.conv2d(torch.tanh(critic.c1(torch.cat([l_ / 100, a], 1))),
                                                                      w, critic.c2.bias, stride=2, padding=1),
                                   L, real, fake, eps).sum(),
        (critic.c2.weight.detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_generator_value_and_gradient(batch):
    """The term is D(real) − D(fake) per image, and its gradient reaches the prediction only through D(fake)."""
    L, real, fake = batch
    crit = losses.build("wgan_gp", reduction="none")
    pred = (fake.float() * 110).requires_grad_(True)
    val = crit(pred, real.float() * 110, L=L.float()).flatten()
    with torch.no_grad():
        want = image_scores(crit.critic, L.float(), real.float()) - image_scores(crit.critic, L.float(), fake.float())
    torch.testing.assert_close(val, want, rtol=1e-4, atol=1e-5)
    val.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in crit.critic.parameters())  # the generator's step leaves the critic alone


def test_critic_learns_to_separate_real_from_fake(batch):
    """A few critic updates on a fixed (real, fake) pair raise its Wasserstein estimate D(real) − D(fake), and the
    number of updates is critic_steps per call."""
    L, real, fake = batch
    torch.manual_seed(0)
    crit = losses.build("wgan_gp", critic_steps=3, critic_lr=1e-3, critic_width=8)
    pred, target = fake.float() * 110, real.float() * 110
    first = crit.extra_step(pred, target, L=L.float())["wasserstein"].item()
    for _ in range(5):
        stats = crit.extra_step(pred, target, L=L.float())
    assert crit.updates == 18
    assert stats["wasserstein"].item() > first
    assert set(stats) == {"critic_loss", "gradient_penalty", "wasserstein"}


@pytest.mark.parametrize("bad, match", [({"critic_steps": 0}, "critic_steps"), ({"critic_lr": 0}, "critic_lr"),
                                        ({"gp_weight": -1}, "gp_weight"), ({"critic_width": 0}, "critic_width")])
def test_bad_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        losses.build("wgan_gp", **bad)


def test_critic_is_a_patch_critic():
    c = PatchCritic(width=8)
    out = c(torch.rand(2, 1, 64, 64) * 100, torch.randn(2, 2, 64, 64))
    assert out.shape == (2, 1, 8, 8)  # one score per receptive-field patch
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in c.modules())
