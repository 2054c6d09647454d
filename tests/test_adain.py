"""AdaIN: the op, the adain / adain_style losses, the reference-based adain_unet colorizer and the adain grid."""
from __future__ import annotations

import csv

import pytest
import torch
import torchvision

from bench.config import grids
from bench.data.colour import lab_to_rgb, split_lab
import losses
from losses.adain import content_term, style_term
import models
from models.adain import adain
from models.vgg import VGG19_UPTO, EncoderWeightsError, VGG19Features, imagenet_checkpoint_path


def fake_vgg19_file(path):
    """A randomly initialised torchvision VGG-19 stack (up to relu4_1: all the AdaIN parts read) as a state dict."""
    layers = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])[:VGG19_UPTO]
    state = {f"features.{k}": v for k, v in layers.state_dict().items()}
    torch.save(state, path)
    return state


def lab_batch(b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.rand(b, 1, size, size, generator=g) * 80 + 10
    ab = torch.randn(b, 2, size, size, generator=g) * 15
    return L, ab, lab_to_rgb(torch.cat([L, ab], 1))


# ----------------------------------------------------------------------------------------------------- the op


def test_adain_output_takes_the_style_statistics():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(3, 6, 9, 7, generator=g) * 4 + 2
    # channel stds from 0.5 to 3: eps (1e-5 on the variance) biases σ by eps / 2σ, far below the tolerance
    style = torch.randn(3, 6, 5, 11, generator=g) * (0.5 + 2.5 * torch.rand(1, 6, 1, 1, generator=g)) - 1.5
    out = adain(content, style)
    assert out.shape == content.shape
    dims = (2, 3)
    torch.testing.assert_close(out.mean(dims), style.mean(dims), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dims, unbiased=False), style.std(dims, unbiased=False), atol=1e-4, rtol=1e-4)
    # the layout is the content's: per channel, the output is an increasing affine map of the content
    corr = torch.corrcoef(torch.stack([out[1, 2].flatten(), content[1, 2].flatten()]))[0, 1]
    assert corr > 0.9999
    torch.testing.assert_close(adain(content, content), content, atol=1e-4, rtol=1e-4)


def test_adain_survives_constant_maps_and_checks_shapes():
    out = adain(torch.ones(1, 2, 1, 1), torch.randn(1, 2, 4, 4))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="channels"):
        adain(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 4, 4))


# ----------------------------------------------------------------------------------------------------- losses


def test_loss_terms_are_zero_when_output_matches_target_and_style():
    feats = [torch.randn(2, c, s, s) for c, s in ((4, 16), (8, 8), (16, 4), (32, 2))]
    assert content_term(feats[-1], feats[-1].clone()).abs().max() == 0
    assert style_term(feats, [f.clone() for f in feats]).abs().max() == 0
    other = [f * 1.5 + 0.3 for f in feats]
    assert (style_term(feats, other) > 0).all() and (content_term(feats[-1], other[-1]) > 0).all()


@pytest.mark.parametrize("name", ["adain", "adain_style"])
def test_loss_is_zero_for_the_true_colours_and_positive_otherwise(name):
    L, ab, rgb = lab_batch()
    loss = losses.build(name, vgg_width=0.25)
    assert loss.head == "ab" and loss.encoder_pretrained is False
    assert loss(ab.clone(), ab, L=L, rgb=rgb).item() == pytest.approx(0.0, abs=1e-10)
    assert loss(ab * 0.3, ab, L=L, rgb=rgb).item() > 1e-5


def test_adain_loss_is_linear_in_the_style_weight():
    L, ab, rgb = lab_batch()
    pred = ab * 0.5 + 3
    content, style = losses.build("adain", vgg_width=0.25).terms(pred, ab, L, rgb)
    assert content.mean() > 0 and style.mean() > 0
    values = {lam: losses.build("adain", style_weight=lam, vgg_width=0.25)(pred, ab, L=L, rgb=rgb).item()
              for lam in (1.0, 10.0, 20.0)}
    assert values[1.0] < values[10.0] < values[20.0]
    assert values[10.0] - values[1.0] == pytest.approx(9 * style.mean().item(), rel=1e-4)
    assert values[1.0] == pytest.approx((content + style).mean().item(), rel=1e-5)
    # adain_style is λ · L_style alone, and a spec weight is the same λ
    alone = losses.build("adain_style", vgg_width=0.25)(pred, ab, L=L, rgb=rgb).item()
    assert alone == pytest.approx(style.mean().item(), rel=1e-5)
    spec = losses.build("mse+10*adain_style", vgg_width=0.25)(pred, ab, L=L, rgb=rgb).item()
    mse = losses.build("mse")(pred, ab).item()
    assert spec == pytest.approx(mse + 10 * style.mean().item(), rel=1e-5)


def test_grey_target_is_the_adain_of_the_greyscale_features():
    L, ab, rgb = lab_batch()
    loss = losses.build("adain", target="grey", vgg_width=0.25)
    content, _ = loss.terms(ab, ab, L, rgb)  # the true colours are not the grey image's renormalised features
    assert content.mean() > 0
    with pytest.raises(ValueError, match="target"):
        losses.build("adain", target="nope")


def test_reductions_and_loss_weight():
    L, ab, rgb = lab_batch(b=3)
    pred = ab * 0.5
    none = losses.build("adain", reduction="none", vgg_width=0.25)(pred, ab, L=L, rgb=rgb)
    assert none.shape == (3, 1, 1, 1)
    mean = losses.build("adain", vgg_width=0.25)(pred, ab, L=L, rgb=rgb)
    total = losses.build("adain", reduction="sum", loss_weight=2.0, vgg_width=0.25)(pred, ab, L=L, rgb=rgb)
    torch.testing.assert_close(none.mean(), mean)
    torch.testing.assert_close(total, 2 * none.sum())
    # per-image values broadcast against a pixel loss in a composite spec
    both = losses.build("mse+adain", reduction="none", vgg_width=0.25)(pred, ab, L=L, rgb=rgb)
    assert both.shape == ab.shape
    torch.testing.assert_close(both.mean(), losses.build("mse+adain", vgg_width=0.25)(pred, ab, L=L, rgb=rgb))
    with pytest.raises(ValueError, match="style_weight"):
        losses.build("adain", style_weight=0)
    with pytest.raises(ValueError, match="lightness"):
        losses.build("adain_style", vgg_width=0.25)(pred, ab)


def test_loss_gradients_reach_the_colorizer_and_never_the_loss_vgg():
    torch.manual_seed(0)
    model = models.build("adain_unet", head="ab", width=0.25)
    # the head starts at zero (ab = 0): the layers below it get gradients from the second step on; give it weights
    torch.nn.init.normal_(model.color.proj.weight, std=0.1)
    loss = losses.build("adain", vgg_width=0.25)
    vgg_before = {k: v.clone() for k, v in loss.vgg.state_dict().items()}
    L, ab, rgb = lab_batch(size=32)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=1e-2)
    out = model(L, rgb.flip(-1))
    value = loss(out, ab, L=L, rgb=rgb)
    value.backward()
    assert torch.isfinite(value)
    assert all(p.grad is None for p in loss.parameters()) and not any(p.requires_grad for p in loss.parameters())
    assert model.color.proj.weight.grad.abs().sum() > 0
    assert model.features[0].weight.grad.abs().sum() > 0 and model.ref_features[0].weight.grad.abs().sum() > 0
    opt.step()
    for k, v in loss.vgg.state_dict().items():
        assert torch.equal(v, vgg_before[k]), k
    loss.train()
    assert not loss.vgg.training  # a frozen extractor stays in eval mode


def test_loss_vgg_loads_pretrained_weights_and_never_falls_back_to_random(tmp_path, monkeypatch):
    state = fake_vgg19_file(tmp_path / "vgg19.pth")
    loss = losses.build("adain", encoder_weights=str(tmp_path / "vgg19.pth"))
    assert loss.encoder_pretrained
    torch.testing.assert_close(loss.vgg.features[19].weight, state["features.19.weight"], rtol=0, atol=0)
    # "imagenet" reads torchvision's cache under TORCH_HOME
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = imagenet_checkpoint_path("vgg19")
    ckpt.parent.mkdir(parents=True)
    (tmp_path / "vgg19.pth").rename(ckpt)
    assert losses.build("adain_style", encoder_weights="imagenet").encoder_pretrained
    with pytest.raises(EncoderWeightsError):
        losses.build("adain", encoder_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(EncoderWeightsError, match="width"):
        VGG19Features("imagenet", width=0.25)
    # random features are seeded: every unpretrained loss is the same function
    a, b = VGG19Features(width=0.25), VGG19Features(width=0.25)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----------------------------------------------------------------------------------------------------- adain_unet


def test_adain_unet_uses_the_reference_and_checks_its_arguments():
    torch.manual_seed(0)
    L, ab, rgb = lab_batch(b=2, size=32)
    for skips in ("concat", "adain", "none"):
        # train mode: at initialisation the eval-mode BatchNorms (running stats 0 and 1) with PyTorch's default conv
        # init shrink the decoder's signal so much that the output is nearly the head's bias, whatever the input
        model = models.build("adain_unet", head="ab", width=0.25, encoder_weights="none", skips=skips)
        assert model.needs_reference and model.task == "colorization" and model.encoder_pretrained is False
        torch.nn.init.normal_(model.color.proj.weight, std=0.1)  # the head starts at zero: no input shows through it
        with torch.no_grad():
            a = model.to_ab(model(L, rgb))
            b = model.to_ab(model(L, 1 - rgb[:, :, :16, :16]))  # another reference, of another size
        assert a.shape == ab.shape and (a - b).abs().max() > 0.1
    bins = models.build("adain_unet", head="bins", width=0.25, skips="none")
    assert bins.to_ab(bins(L, rgb)).shape == ab.shape
    with pytest.raises(ValueError, match="skips"):
        models.build("adain_unet", skips="sum")
    with pytest.raises(ValueError, match="train_reference"):
        models.build("adain_unet", train_reference="random")
    with pytest.raises(ValueError, match="reference"):
        models.build("adain_unet", width=0.25)(L)


@pytest.mark.parametrize("skips", ["concat", "adain", "none"])
def test_each_skip_treatment_trains_on_real_photos(skips, real_batch):
    torch.manual_seed(0)
    rgb = real_batch[:6, :, 16:48, 16:48].float() / 255  # 32² centres: a 2×2 bottleneck keeps it cheap
    L, ab = split_lab(rgb)
    ref = rgb.flip(-1)  # another view of the same photos: same colours, other positions
    model = models.build("adain_unet", head="ab", width=0.25, skips=skips)
    loss = losses.build("mse+adain", style_weight=1.0, vgg_width=0.25)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    values = []
    for _ in range(6):
        value = loss(model(L, ref), ab, L=L, rgb=rgb)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < 0.8 * values[0], values


# ----------------------------------------------------------------------------------------------------- grids


def test_losses_grid_has_an_adain_entry():
    cells = {c.name: c.changes for c in grids.get("losses").cells}
    adain_cells = [c for c in cells.values() if "adain" in c["loss"]]
    assert adain_cells
    for c in adain_cells:
        losses.parse_spec(c["loss"])


def test_adain_grid_crosses_skips_weights_and_pixel_losses():
    cells = grids.get("adain").cells
    combos = {(c.changes["model_params"]["skips"], c.changes["loss_params"]["style_weight"], c.changes["loss"])
              for c in cells if c.changes["model_params"].get("train_reference", "same") == "same"}
    assert {s for s, _, _ in combos} == {"concat", "adain", "none"}
    assert len({w for _, w, _ in combos}) >= 3 and {lo for _, _, lo in combos} == {"mse+adain", "l1+adain"}
    assert len(combos) == 3 * len({w for _, w, _ in combos}) * 2


def test_adain_grid_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from bench import ablate

    # the quick preset at 32² and 2 steps of 4 images: every cell trains, validates and is scored, in seconds
    args = ["--grid", "adain", "--models", "adain_unet", "--preset", "quick", "--steps", "2", "--seeds", "1",
            "--folds", "1", "--out", str(tmp_path), "--no-progress", "--device", "cpu",
            "--set", "batch_size=4", "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32"]
    full = grids.get("adain")
    _, _, jobs = ablate.plan(ablate.parse_args(args), torch.device("cpu"))  # every cell of the full grid validates
    assert len(jobs) == len(full.cells)
    # train a reduced grid that still covers each skip treatment, both pixel losses, the λ extremes and the
    # other-photo reference (the whole grid costs ~5× more CPU time for no more coverage)
    keep = ["mse+adain_w0.1_concat", "l1+adain_w10_adain", "mse+adain_w1_none", "mse+adain_w1_concat_refother"]
    monkeypatch.setitem(grids.GRIDS, "adain", grids.Grid("adain", full.description,
                                                         tuple(c for c in full.cells if c.name in keep)))
    assert ablate.main(args) == 0
    with open(tmp_path / "runs.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == "adain_unet"]
    assert sorted(r["cell"] for r in rows) == sorted(keep)
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert float(r["psnr"]) > 10 and float(r["psnr_ref_other"]) > 10
    assert {r["skips"] for r in rows} == {"concat", "adain", "none"}
    assert {float(r["style_weight"]) for r in rows} == {0.1, 1.0, 10.0}
    board = (tmp_path / "leaderboard.md").read_text()
    assert "style_weight" in board and "skips" in board
    # the grid's model parameters make no sense for a model without a reference: refused, not silently ignored
    assert ablate.main(["--grid", "adain", "--steps", "2", "--seeds", "1", "--out", str(tmp_path / "x")]) == 2
    assert "skips" in capsys.readouterr().err
