"""Hostile use (issue 15): every case that a new user hit and the harness handled badly, kept as a regression test.

The numbers follow the issue: 1 a changed configuration reusing old results, 2 passwords in shareable files,
3 a full disk, 4 a runs.csv without its header, 5 a decompression bomb, 6 wrong-typed --set values, 7 a report
without per_image.csv, 8 the smaller cases (inf, --device, corrupt run.json, shell quoting, validation before
anything is created, tune's importance.png), 9 thread counts and overlapping validation/test images.

The command-line cases run the smoke grid in process at tiny settings (32-px crops, batches of 4, 2 steps, 1 seed).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import struct
import subprocess
import uuid
import warnings
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from bench import ablate, report, tune
from bench.config.cell import check_values, finite_float, parse_overrides
from bench.core.device import pick_device
from bench.core.records import (
    CorruptRecordError, append_rows, atomic_write_text, command_line, environment, read_rows, redact)
from bench.data.sources import MAX_PIXELS, DataError, ImageStore, list_images, make_splits
from bench.grid import study as gs
from bench.grid.engine import GridRun
from bench.grid.plan import default_run_dir
from bench.reporting import leaderboard
from bench.training.loop import prepare
from helpers import one_error, run, train_and_test_folders

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2",
        "--device", "cpu", "--no-progress"]
PG_URL = os.environ.get("COLORBENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "s3cretPW"


@pytest.fixture
def argv_for(data_root):
    """argv of the tiny smoke run into ``out``."""
    def make(out, *extra):
        return ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root), "--out",
                str(out), *TINY, *extra]
    return make


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    """A finished tiny smoke run (copied by the tests that damage it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    argv = ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root), "--out", str(out),
            *TINY]
    assert ablate.main(argv) == 0
    return out, argv


def copy_run(finished, tmp_path) -> tuple[Path, list[str]]:
    src, argv = finished
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst, [a if a != str(src) else str(dst) for a in argv]


# ------------------------------------------------------------------------- 1. a changed configuration, old results


def test_1_changed_configuration_in_the_same_folder_is_refused_naming_the_keys(finished, tmp_path, capsys):
    out, argv = copy_run(finished, tmp_path)
    before = (out / "runs.csv").read_bytes()
    rc, _, err = run(argv + ["--steps", "3", "--set", "lr=0.002"], capsys)
    one_error(rc, err, "steps", "lr", str(out))
    assert (out / "runs.csv").read_bytes() == before
    rc, _, err = run(argv, capsys)  # the unchanged command still resumes (nothing to train)
    assert rc == 0, err


def test_1_default_folder_and_study_name_change_with_the_configuration(tmp_path, monkeypatch, capsys, data_root):
    """Without --out, the same command twice uses one folder; a changed --steps/--set a new one (and a new study);
    one more seed the same folder."""
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(ImageStore, "__init__", lambda *a, **k: pytest.fail("data decoded"))
    base = ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root), *TINY]

    def where(*extra):
        args = ablate.parse_args(base + list(extra))
        base_cfg, preset_name, jobs = ablate.plan(args, torch.device("cpu"))
        run = GridRun(args.grid, preset_name, base_cfg, jobs,
                      default_run_dir(args.grid, preset_name, args.data, args.data_root, jobs, args.test),
                      torch.device("cpu"), data=args.data, data_root=args.data_root)
        return run.run_dir, run.default_study_name()

    first, again = where(), where()
    changed = where("--steps", "3", "--set", "lr=0.002")
    assert first == again
    assert changed[0] != first[0] and changed[1] != first[1]
    assert first[0].parent == tmp_path / "results" and first[0].name.startswith("smoke-quick-cbsd68-")
    assert where("--seeds", "2")[0] == first[0]  # another seed: same folder, the finished seed is kept
    assert where("--data", str(data_root / "cbsd68"), "--no-verify")[0] != first[0]  # other data (a folder)


def test_1_explicit_study_name_with_another_configuration_is_refused(tmp_path, capsys, argv_for):
    """A study shared under an explicit --study-name (here a journal file) cannot take runs of another
    configuration: exit 2 naming the keys, before anything is trained."""
    journal = tmp_path / "shared.journal"
    rc, _, err = run(argv_for(tmp_path / "a", "--storage", journal, "--study-name", "shared"), capsys)
    assert rc == 0, err
    rc, _, err = run(argv_for(tmp_path / "b", "--storage", journal, "--study-name", "shared", "--steps", "3"),
                     capsys)
    one_error(rc, err, "steps: 2 → 3", "shared")
    assert not (tmp_path / "b" / "runs.csv").exists()


# ------------------------------------------------------------------------------------------ 2. secrets


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/test",
    f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:54x2/test",  # SQLAlchemy cannot parse this port
    f"redis://:{SECRET}@localhost:6379/0",
    f"mysql+pymysql://root:{SECRET}@db/optuna?charset=utf8",
    f"postgresql://u@h/db?password={SECRET}&sslmode=require",
    f"postgresql://u:{SECRET}@with@at@h/db",
])
def test_2_redact_removes_every_password(url):
    assert SECRET not in redact(url)
    assert SECRET not in redact(f"cannot open storage {url}: OperationalError")
    assert SECRET not in command_line("python -m bench.ablate", ["--storage", url])
    assert "://" in redact(url) and "***" in redact(url)


def test_2_storage_errors_and_the_command_line_never_show_the_password(tmp_path, capsys, argv_for):
    for url in (f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:54x2/test", f"redis://:{SECRET}@127.0.0.1:1/0"):
        rc, out, err = run(argv_for(tmp_path / "x", "--storage", url), capsys)
        one_error(rc, err, "***")
        assert SECRET not in out + err


def test_2_no_file_of_a_run_its_report_or_its_output_holds_the_password(tmp_path, capsys, argv_for):
    """PostgreSQL on 127.0.0.1 uses trust authentication: the password in the URL is accepted and ignored."""
    import optuna

    url = PG_URL.replace("postgres@", f"postgres:{SECRET}@", 1)
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run with space"
    try:
        rc, stdout, stderr = run(argv_for(out, "--storage", url, "--study-name", name), capsys)
        assert rc == 0, stderr
        assert report.main([str(out), "--n-boot", "200"]) == 0
        stdout2, stderr2 = capsys.readouterr()
    finally:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=PG_URL)
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 8
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in stdout + stderr + stdout2 + stderr2
    command = json.loads((out / "run.json").read_text())["command"]
    assert "postgres:***@" in command


# ------------------------------------------------------------------------------------------ 3. a full disk


@pytest.fixture(params=["24k", "64k"])
def small_disk(tmp_path, request):
    """A tiny tmpfs (needs root and mount): 24 KiB fills up around the journal and run.json, 64 KiB around the
    sample images (the tiny run writes about 120 KiB in 4 KiB pages). Returns (folder, grow) where grow() frees
    space by enlarging it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)

    yield mnt, grow
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_3_full_disk_is_one_line_and_the_same_command_resumes_after_space_is_freed(small_disk, capsys, argv_for):
    mnt, grow = small_disk
    argv = argv_for(mnt / "run", "--heartbeat", "1")  # a run cut off mid-trial is stale after 3 s
    rc, _, err = run(argv, capsys)
    one_error(rc, err, "no space left")
    grow()
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    rows = read_rows(mnt / "run" / "runs.csv")
    assert sorted(r["cell"] for r in rows) == ["grey", "kl", "mean_colour", "mse", "oracle_tint"]
    assert all(r["status"] == "ok" for r in rows)
    assert not [p for p in (mnt / "run").rglob(".*.tmp")]


def test_3_full_disk_injected_while_saving_samples(tmp_path, capsys, argv_for, monkeypatch):
    """The same without a tmpfs: ENOSPC raised where the first run saves its sample images. One line, exit 2; the
    trial is not counted as a crash, and the same command then trains and records every run once."""
    import bench.grid.jobrun

    def full(run_dir, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(run_dir) / "samples" / "x.png"))

    argv = argv_for(tmp_path / "run")
    monkeypatch.setattr(bench.grid.jobrun, "save_samples", full)
    rc, _, err = run(argv, capsys)
    one_error(rc, err, "no space left", "samples")
    monkeypatch.undo()
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    rows = read_rows(tmp_path / "run" / "runs.csv")
    assert sorted(r["cell"] for r in rows) == ["grey", "kl", "mean_colour", "mse", "oracle_tint"]
    assert all(r["status"] == "ok" for r in rows)


def test_3_atomic_write_on_a_full_disk_keeps_the_old_file_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    atomic_write_text(path, "model,cell,seed,status\n")
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError) as info:
        append_rows(path, [{"model": "m", "cell": "c", "seed": 0, "status": "ok"}])
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "model,cell,seed,status\n"
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"] or not [p for p in tmp_path.glob(".*.tmp")]


def test_3_half_written_journal_line_is_repaired_and_damage_elsewhere_says_how_to_recover(tmp_path, capsys):
    import optuna

    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=gs.open_storage(str(path)))
    study.enqueue_trial({}, user_attrs={"key": "a"})
    good = path.read_bytes()
    path.write_bytes(good + b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "sta')  # the disk filled up here
    storage = gs.open_storage(str(path))
    assert "repaired" in capsys.readouterr().err
    assert path.read_bytes() == good
    study = optuna.load_study(study_name="s", storage=storage)
    study.enqueue_trial({}, user_attrs={"key": "b"})  # appending after the repair gives a readable journal
    assert len(optuna.load_study(study_name="s", storage=gs.open_storage(str(path))).trials) == 2

    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:10] + lines[2]  # the old failure: a partial line with the next write glued to it
    path.write_bytes(b"\n".join(lines[:2] + lines[3:]))
    with pytest.raises(gs.StorageError, match=rf"line 2 of .*head -n 1 {path}"):
        gs.open_storage(str(path))


# ------------------------------------------------------------------------------------ 4. runs.csv without header


def test_4_runs_csv_without_its_header_is_refused_by_the_runner_and_the_report(finished, tmp_path, capsys):
    out, argv = copy_run(finished, tmp_path)
    lines = (out / "runs.csv").read_text().splitlines(keepends=True)
    (out / "runs.csv").write_text("".join(lines[1:]))  # sed -i 1d runs.csv
    damaged = (out / "runs.csv").read_bytes()
    with pytest.raises(CorruptRecordError, match="header"):
        read_rows(out / "runs.csv")
    rc, _, err = run(argv, capsys)
    one_error(rc, err, str(out / "runs.csv"))
    assert (out / "runs.csv").read_bytes() == damaged
    assert report.main([str(out)]) == 2
    one_error(2, capsys.readouterr().err, str(out / "runs.csv"))


@pytest.mark.parametrize("name", ["per_image.csv", "history.csv"])
def test_4_damaged_per_image_or_history_is_one_line_naming_it(name, finished, tmp_path, capsys):
    out, argv = copy_run(finished, tmp_path)
    lines = (out / name).read_text().splitlines(keepends=True)
    (out / name).write_text("".join(lines[1:]))
    rc, _, err = run(argv, capsys)
    one_error(rc, err, str(out / name))
    assert report.main([str(out)]) == 2
    one_error(2, capsys.readouterr().err, str(out / name))


# ------------------------------------------------------------------------------------ 5. decompression bomb


def write_bomb(path: Path, side: int = 20000) -> None:
    """A valid 1-bit greyscale PNG of side × side pixels, one colour: about 60 KB on disk, 400 MP decoded."""
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture
def bomb_folder(tmp_path, data_root):
    folder = tmp_path / "data"
    folder.mkdir()
    for p in list_images(data_root / "cbsd68")[:8]:
        shutil.copy(p, folder / p.name)
    write_bomb(folder / "bomb.png")
    return folder


def test_5_an_image_over_the_pixel_limit_is_skipped_once_by_name_and_never_decoded(bomb_folder, monkeypatch):
    assert MAX_PIXELS == 100_000_000
    opened, loads = [], []
    real_open, real_load = Image.open, Image.Image.load

    def counting_open(fp, *a, **k):
        opened.append(str(fp))
        return real_open(fp, *a, **k)

    def counting_load(self, *a, **k):
        if getattr(self, "filename", "").endswith("bomb.png"):
            loads.append(self.filename)
        return real_load(self, *a, **k)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(Image.Image, "load", counting_load)
    from bench.config.cell import preset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare(preset("quick").replace(size=32, crop=32, eval_size=32), str(bomb_folder), verify=False)
    bomb = str(bomb_folder / "bomb.png")
    assert [(p, why) for p, why in prep.skipped] == [(bomb, "too large (20000x20000 = 400 MP; the limit is 100 MP)")]
    messages = [str(w.message) for w in caught]
    assert len([m for m in messages if "bomb.png" in m]) == 1, messages
    assert not [m for m in messages if "bomb.png" not in m and "pixels" in m], messages  # no anonymous PIL warning
    assert not loads  # never decoded
    # every file is opened (and decoded) exactly once: the probe is the decode
    assert sorted(opened) == sorted(str(p) for p in list_images(bomb_folder))


# ------------------------------------------------------------------------------------ 6. wrong-typed --set values


BAD_SET = {"steps=abc": "steps", "crop=big": "crop", "lr=fast": "lr", "crop_seed=1.5": "crop_seed",
           "loss_params=notjson": "loss_params", "lr=Infinity": "lr", "compile=1": "compile",
           'loss_params={"style_weight": NaN}': "style_weight", "batch_size=true": "batch_size"}


@pytest.mark.parametrize("item", list(BAD_SET))
def test_6_wrong_typed_set_value_is_one_line_and_nothing_is_created(item, tmp_path, capsys, argv_for, monkeypatch):
    with pytest.raises(ValueError, match=BAD_SET[item]):
        parse_overrides([item])
    monkeypatch.setattr(ImageStore, "__init__", lambda *a, **k: pytest.fail("data decoded"))
    out = tmp_path / "out"
    rc, _, err = run(argv_for(out, "--set", item), capsys)
    one_error(rc, err, BAD_SET[item])
    assert not out.exists()


def test_6_check_values_is_the_one_type_check():
    assert check_values({"steps": 1e3, "lr": 1, "loss_params": {"rebalance": True}}) == \
        {"steps": 1000, "lr": 1.0, "loss_params": {"rebalance": True}}
    with pytest.raises(ValueError, match="unknown configuration key"):
        check_values({"stepz": 3})


# ------------------------------------------------------------------------------------ 7. report without per_image


def test_7_report_without_per_image_says_paired_statistics_are_unavailable(finished, tmp_path, capsys):
    out, _ = copy_run(finished, tmp_path)
    (out / "per_image.csv").unlink()
    assert report.main([str(out), "--n-boot", "200"]) == 0
    md = (out / "report.md").read_text()
    assert "Tied with the best" not in md and "Significantly better than grey" not in md
    assert "Paired statistics are unavailable" in md and "per_image.csv is missing" in md
    assert "Paired statistics are unavailable" in (out / "report.html").read_text()


# ------------------------------------------------------------------------------------ 8. the smaller cases


def test_8_inf_and_nan_are_refused_wherever_a_number_is_taken(tmp_path, capsys, argv_for):
    for text in ("inf", "-inf", "nan", "Infinity"):
        with pytest.raises(Exception, match="finite"):
            finite_float(text)
    for bad in (["--lr", "inf"], ["--set", "lr=Infinity"], ["--set", 'loss_params={"style_weight": -Infinity}']):
        rc, _, err = run(argv_for(tmp_path / "a", *bad), capsys)
        one_error(rc, err, "finite")
    for bad in (["--lr-range", "1e-5", "inf"], ["--timeout", "nan"], ["--style-weight-range", "nan", "1"]):
        assert tune.main(["--out", str(tmp_path / "t"), *bad]) == 2
        one_error(2, capsys.readouterr().err, "finite")
    assert not (tmp_path / "a").exists() and not (tmp_path / "t").exists()


@pytest.mark.parametrize("device", ["tpu9", "cuda:7", "meta", "nonsense:x"])
def test_8_bad_device_is_one_line(device, tmp_path, capsys, argv_for):
    with pytest.raises(ValueError):
        pick_device(device)
    rc, _, err = run(argv_for(tmp_path / "a", "--device", device), capsys)
    one_error(rc, err, "--device")


def test_8_corrupt_run_json_is_one_line_in_the_report(finished, tmp_path, capsys):
    out, _ = copy_run(finished, tmp_path)
    (out / "run.json").write_text('{"command": "python -m bench.ablate", "grid": ')
    assert report.main([str(out)]) == 2
    one_error(2, capsys.readouterr().err, str(out / "run.json"))


def test_8_reproduce_command_is_shell_quoted(tmp_path, capsys, argv_for):
    out = tmp_path / "a b <c> 'd'"
    argv = argv_for(out, "--set", 'loss_params={"rebalance": false}')
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    command = json.loads((out / "run.json").read_text())["command"]
    words = shlex.split(command)
    assert words[words.index("--out") + 1] == str(out)
    assert words[-len(argv):] == argv
    assert report.main([str(out), "--n-boot", "200"]) == 0
    assert command in (out / "report.md").read_text()


def test_8_data_errors_leave_nothing_behind(tmp_path, capsys, argv_for, data_root):
    """A test folder holding a training image: exit 2 before the folder, the journal or any trial exists."""
    import optuna

    train, test, photos = train_and_test_folders(tmp_path, data_root)
    shutil.copy(photos[3], test / "copy.png")
    out = tmp_path / "out"
    argv = [a if a != "cbsd68" else str(train) for a in argv_for(out, "--test", str(test))]
    rc, _, err = run(argv, capsys)
    one_error(rc, err, "also in the training set")
    assert not out.exists()
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    rc, _, err = run(argv + ["--storage", PG_URL, "--study-name", name], capsys)
    one_error(rc, err, "also in the training set")
    assert name not in optuna.get_all_study_names(PG_URL)


def test_8_tune_with_one_trial_does_not_claim_importance_png(tmp_path, capsys):
    out = tmp_path / "tune"
    argv = ["--trials", "1", "--out", str(out), "--data", "kodak24", *TINY]
    assert tune.main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert not (out / "importance.png").exists()
    assert "importance.png" not in stdout
    assert "importance.png not written" in stderr and "at least 2" in stderr
    assert (out / "best_params.json").is_file() and "best_params.json" in stdout


# ------------------------------------------------------------------------- 9. thread counts, validation/test overlap


def test_9_rows_record_the_thread_count_and_mixed_environments_are_shown(finished):
    out, _ = finished
    rows = read_rows(out / "runs.csv")
    assert {r["torch_threads"] for r in rows} == {str(torch.get_num_threads())}
    assert environment("cpu")["torch_threads"] == torch.get_num_threads()
    df = leaderboard.load_runs(out)
    trained = df[df["cell"] == "mse"].iloc[0]
    other = trained.copy()
    other["seed"], other["torch_threads"], other["psnr"] = 1, "1", trained["psnr"] + 5
    mixed = pd.concat([df, other.to_frame().T], ignore_index=True)
    board, failed = leaderboard.build(mixed)
    row = board[board["cell"] == "mse"].iloc[0]
    assert "torch_threads" in row["mixed_env"]
    assert board[board["cell"] == "kl"].iloc[0]["mixed_env"] == ""
    md = leaderboard.to_markdown(board, failed)
    assert "Warning:" in md and "mixed environment" in md
    # the same thread count on another CPU generation (or kernel set) is another environment too
    assert {r["cpu"] for r in rows} == {environment("cpu")["cpu"]} and "torch kernels" in rows[0]["cpu"]
    elsewhere = trained.copy()
    elsewhere["seed"], elsewhere["cpu"] = 1, "family 23 model 49; torch kernels AVX2"
    board, _ = leaderboard.build(pd.concat([df, elsewhere.to_frame().T], ignore_index=True))
    assert board[board["cell"] == "mse"].iloc[0]["mixed_env"].startswith("cpu: ")


def test_9_a_test_image_identical_to_a_validation_image_is_refused(tmp_path, data_root):
    train, test, photos = train_and_test_folders(tmp_path, data_root)
    splits = make_splits(str(train), test=str(test))
    shutil.copy(splits.val[0], test / "renamed.png")
    with pytest.raises(DataError, match="also in the validation set"):
        make_splits(str(train), test=str(test))
