"""The AdaIN style-transfer network (model ``adain``) and its trainer ``python -m bench.styletransfer``."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from bench import styletransfer
from bench.data.sources import BUNDLED, ImageStore
from models.adain import AdaINStyleTransfer, make_decoder, channel_stats
from test_adain import fake_vgg19_file


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A content folder (the first 6 bundled Kodak photos) and a style folder (the last 4), as symlinks."""
    root = tmp_path_factory.mktemp("st")
    photos = sorted(BUNDLED.glob("*.png"))
    for name, files in (("content", photos[:6]), ("style", photos[-4:])):
        (root / name).mkdir()
        for f in files:
            (root / name / f.name).symlink_to(f)
    return root / "content", root / "style"


def tiny_args(folders, out, *extra):
    content, style = folders
    return ["--content", str(content), "--style", str(style), "--out", str(out), "--preset", "quick",
            "--size", "32", "--crop", "32", "--batch-size", "2", "--steps", "3", "--no-progress", "--device", "cpu",
            *extra]


def test_style_transfer_model():
    model = AdaINStyleTransfer(width=0.25, encoder_weights="none")
    assert model.task == "style_transfer" and model.encoder_pretrained is False
    content, style = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 24, 24)
    out = model(content, style)
    assert out.shape == content.shape and torch.isfinite(out).all()
    # alpha = 0 decodes the content's own features; alpha = 1 the AdaIN target
    _, t0, _ = model.stylise(content, style, alpha=0.0)
    _, t1, fs = model.stylise(content, style, alpha=1.0)
    torch.testing.assert_close(t0, model.encode(content)[-1])
    torch.testing.assert_close(channel_stats(t1)[0], channel_stats(fs[-1])[0], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.rand(1, 3, 30, 32), style[:1])
    with pytest.raises(ValueError, match="alpha"):
        model(content, style, alpha=1.5)


def test_decoder_mirrors_the_encoder():
    dec = make_decoder(1.0)
    convs = [m for m in dec if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (512, 256), (256, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64), (64, 3)]
    assert sum(isinstance(m, torch.nn.Upsample) and m.mode == "nearest" for m in dec) == 3
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in dec) == len(convs)
    assert dec(torch.randn(1, 512, 4, 4)).shape == (1, 3, 32, 32)


def test_training_changes_the_decoder_only(folders):
    torch.manual_seed(0)
    model = AdaINStyleTransfer(width=0.25)
    enc = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    cfg = {**styletransfer.PRESETS["quick"], "size": 32, "crop": 32, "batch_size": 2, "steps": 3, "crop_seed": 0}
    content, style = (ImageStore(sorted(f.iterdir()), 32) for f in folders)
    fit = styletransfer.train(model, cfg, content, style, torch.device("cpu"), progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in fit["history"]) and fit["train_img_per_s"] > 0
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(torch.equal(v, enc[k]) for k, v in model.encoder.state_dict().items())
    assert any(not torch.equal(v, dec[k]) for k, v in model.decoder.state_dict().items())


def test_decoder_loss_decreases_on_a_fixed_batch(real_batch):
    torch.manual_seed(0)
    model = AdaINStyleTransfer(width=0.25)
    content = real_batch[:4, :, :32, :32].float() / 255
    style = real_batch[4:8, :, 32:, 32:].float() / 255
    opt = torch.optim.Adam(model.decoder.parameters(), lr=3e-4)  # 1e-3 overshoots after ~8 steps
    values = []
    for _ in range(15):
        lc, ls, _ = styletransfer.losses_of(model, content, style)
        loss = lc.mean() + 10 * ls.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.8 * values[0], values


def test_cli_trains_evaluates_and_records(folders, tmp_path):
    out = tmp_path / "run"
    assert styletransfer.main(tiny_args(folders, out)) == 0
    record = json.loads((out / "results.json").read_text())
    m = record["metrics"]
    for key in ("content_loss", "style_loss", "total_loss", "style_loss_content_image", "train_img_per_s",
                "eval_img_per_s"):
        assert m[key] >= 0 and m[key] == m[key], key
    assert m["train_img_per_s"] > 0 and m["n_eval"] == 6
    assert record["encoder_pretrained"] is False and record["held_out"] == {"content": False, "style": False}
    assert record["config"]["style_weight"] == 10.0 and record["config"]["lr"] == 1e-4
    from PIL import Image

    with Image.open(out / "samples.png") as sheet:  # rows content, style, stylised; 2-px black gaps, as torchvision's
        crop, (w, h) = record["config"]["crop"], sheet.size
        assert h == 3 * (crop + 2) + 2 and (w - 2) % (crop + 2) == 0 and 1 <= (w - 2) // (crop + 2) <= 4, sheet.size
        assert sheet.getpixel((0, 0)) == (0, 0, 0) and len(sheet.convert("RGB").getcolors(1 << 16) or []) > 50
    assert set(torch.load(out / "decoder.pt")) == set(AdaINStyleTransfer(width=0.25).decoder.state_dict())
    # a second run appends its row
    assert styletransfer.main(tiny_args(folders, out, "--steps", "1")) == 0
    with open(out / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_cli_loads_pretrained_encoder_weights(folders, tmp_path):
    fake_vgg19_file(tmp_path / "vgg19.pth")
    out = tmp_path / "run"
    args = tiny_args(folders, out, "--width", "1", "--encoder-weights", str(tmp_path / "vgg19.pth"), "--steps", "1",
                     "--eval-images", "2")
    assert styletransfer.main(args) == 0
    assert json.loads((out / "results.json").read_text())["encoder_pretrained"] is True


@pytest.mark.parametrize("extra, message", [
    (["--crop", "36", "--size", "48"], "multiple of 8"),
    (["--crop", "64"], "larger than"),
    (["--style-weight", "0"], "style-weight"),
    (["--alpha", "2"], "alpha"),
    (["--encoder-weights", "/nonexistent/vgg19.pth", "--width", "1"], "does not exist"),
    (["--encoder-weights", "imagenet"], "width=1.0"),
])
def test_cli_rejects_bad_arguments_with_exit_2(folders, tmp_path, capsys, extra, message):
    assert styletransfer.main(tiny_args(folders, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_rejects_missing_or_empty_folders(folders, tmp_path, capsys):
    content, style = folders
    (tmp_path / "empty").mkdir()
    for c, s in ((tmp_path / "missing", style), (content, tmp_path / "empty")):
        args = ["--content", str(c), "--style", str(s), "--out", str(tmp_path / "out"), "--no-progress"]
        assert styletransfer.main(args) == 2
        assert capsys.readouterr().err.startswith("error:")
