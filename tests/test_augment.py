"""Training-view augmentation (``CellConfig.augment``, ``train_size``): flips and random-resized crops drawn from
the crop seed, the same in RAM and streamed, and the configuration's checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config.cell import CellConfig, preset
from bench.data import loader
from bench.data.sources import AUGMENTS, RRC_AREA, CropSchedule, ImageStore, crop_box


def photos(folder, n=12):
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        h, w = (60, 90) if i % 2 else (90, 60)
        img = np.clip(rng.normal(128, 50, (h, w, 3)) + np.linspace(0, 90, w)[None, :, None], 0, 255).astype(np.uint8)
        path = folder / f"p{i:02d}.png"
        Image.fromarray(img).save(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return photos(tmp_path_factory.mktemp("aug"))


def test_none_keeps_the_earlier_crops_and_flip_only_adds_the_flip(files):
    """``none`` gives the crops of the code before augmentation (a window at the drawn offset, never flipped);
    ``flip`` keeps every offset and flips about half of the views, each the mirror of the ``none`` view."""
    store = ImageStore(files, 48)
    plain, flipped = CropSchedule(store, 32, 4), CropSchedule(store, 32, 4, "flip")
    n_flipped = 0
    for e in range(3):
        for i in range(len(store)):
            top, left, flip = plain.offset(i, e)
            assert not flip
            img = store.images[i]
            assert torch.equal(plain.crop_of(i, e, 0), img[:, top : top + 32, left : left + 32])
            t2, l2, f2 = flipped.offset(i, e)
            assert (t2, l2) == (top, left)
            expected = plain.crop_of(i, e, 0)
            assert torch.equal(flipped.crop_of(i, e, 0), expected.flip(-1) if f2 else expected)
            n_flipped += f2
    assert 0.25 < n_flipped / (3 * len(store)) < 0.75


def test_random_resized_boxes_lie_inside_the_image_and_vary_in_area_and_aspect():
    areas, aspects = [], []
    for i in range(400):
        top, left, bh, bw, _ = crop_box(48, 72, 32, 0, 0, i, 0, "rrc")
        assert 0 <= top and top + bh <= 48 and 0 <= left and left + bw <= 72
        areas.append(bh * bw / 48**2)
        aspects.append(bw / bh)
    assert min(areas) < 0.4 and max(areas) > 0.9 and all(RRC_AREA[0] * 0.9 < a <= 1.1 for a in areas)
    assert min(aspects) < 0.85 and max(aspects) > 1.2


def test_a_random_resized_view_is_its_box_resized_to_the_crop(files):
    store = ImageStore(files, 64)
    sched = CropSchedule(store, 32, 9, "rrc")
    for i in range(4):
        view = sched.crop_of(i, 0, 0)
        assert view.shape == (3, 32, 32) and view.dtype == torch.uint8
        top, left, bh, bw, flip = crop_box(*store.images[i].shape[-2:], 32, 9, 0, i, 0, "rrc")
        box = store.images[i][:, top : top + bh, left : left + bw].float()
        ref = torch.nn.functional.interpolate(box[None], size=(32, 32), mode="bilinear", antialias=True)[0]
        ref = ref.flip(-1) if flip else ref
        assert (view.float() - ref).abs().max() <= 1.0  # rounding to uint8
    assert torch.equal(sched.batch(2, 4), CropSchedule(store, 32, 9, "rrc").batch(2, 4))  # the seed alone decides


@pytest.mark.parametrize("augment", AUGMENTS)
def test_augmented_streamed_batches_are_the_ram_batches(files, augment):
    ram = list(loader.batches(CropSchedule(ImageStore(files, 48), 32, 5, augment), 0, 6, 4, "same"))
    streamed = list(loader.batches(CropSchedule(loader.FileStore(files, 48), 32, 5, augment), 0, 6, 4, "same",
                                   workers=2))
    for (a, ra), (b, rb) in zip(ram, streamed, strict=True):
        assert torch.equal(a, b) and torch.equal(ra, rb)


def test_the_configuration_checks_the_views():
    base = preset("quick")
    with pytest.raises(ValueError, match="augment must be one of"):
        base.replace(augment="mixup").validate()
    with pytest.raises(ValueError, match="train_size"):
        base.replace(train_size=48).validate()  # below the crop (64)
    assert base.replace(train_size=128).decode_size == 128 and base.decode_size == base.size
    # the defaults leave the configuration's flat form (and so its hash and run folder) as before
    assert "augment" not in CellConfig().to_flat() and "train_size" not in CellConfig().to_flat()
    assert base.replace(augment="rrc").to_flat()["augment"] == "rrc"


def test_a_cell_cannot_change_the_run_wide_train_size():
    from bench.config.grids import Cell, Grid
    from bench.grid.plan import plan_jobs

    grid = Grid("g", "", (Cell("a", {"loss": "mse"}), Cell("b", {"loss": "l1", "train_size": 128})))
    with pytest.raises(ValueError, match="train_size is run-wide"):
        plan_jobs(grid, preset("quick"), ["unet_vgg16"], 1)
    ok = Grid("g", "", (Cell("a", {"loss": "mse", "augment": "rrc"}), Cell("b", {"loss": "l1"})))
    assert len(plan_jobs(ok, preset("quick").replace(train_size=128), ["unet_vgg16"], 1)) == 2


def test_prepare_decodes_the_training_images_at_train_size(tmp_path):
    from bench.training.loop import prepare

    folder = tmp_path / "set"
    folder.mkdir()
    photos(folder, 24)
    cfg = preset("quick").replace(size=48, crop=32, eval_size=32, train_size=64)
    prep = prepare(cfg, str(folder), test=None, verify=False)
    assert prep.train.size == 64 and min(prep.train.images[0].shape[-2:]) == 64
    assert prep.test_images.shape[-1] == 32 and prep.val_images.shape[-1] == 32
