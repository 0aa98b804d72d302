"""The feature cache of frozen towers: the same losses with and without it, misses on every changed input,
concurrent fills, the policy and its errors, ``zoo cache``, and the step-time shares of ``zoo train``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli.app import main
from zoo.errors import ConfigError
from zoo.sdk.interfaces import ImagePreprocessor
from zoo.train.config import parse_train_settings
from zoo.train.data import DataCollator, LlavaDataset
from zoo.train.feature_cache import ENTRY_SUFFIX, FeatureCache, hash_file, tower_fingerprint
from zoo.train.feature_fill import decide, fill, open_cache, prepare_feature_cache
from zoo.train.run import train
from zoo.train.step_profile import PARTS, format_shares

CPU = torch.device("cpu")
HERE = Path(__file__).parent


def write_images(folder: Path, count: int, *, sizes=((32, 32),), seed: int = 0) -> list[dict]:
    """``count`` random-noise images (distinct bytes) and a question about each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        answer = ["red", "green", "blue"][i % 3]
        records.append({"id": f"r{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich colour?"}, {"from": "gpt", "value": answer}]})  # fmt: skip
    return records


def tiny(name: str = "tiny-clip-mlp-qwen2", **overrides):
    torch.manual_seed(0)
    if not overrides:
        return zoo.build(name).eval()
    composition = {"vision": {"name": "tiny-clip", **overrides}, "projector": {"name": "mlp2x-gelu"},
                   "lm": {"name": "tiny-qwen2"}}  # fmt: skip
    return zoo.build({"model": composition}).eval()


def settings(tmp_path: Path, **extra):
    return parse_train_settings({"max_steps": 1, "feature_cache_dir": str(tmp_path / "cache"), **extra})


def batch_loss(model, dataset, indices) -> torch.Tensor:
    batch = DataCollator.from_model(model)([dataset[i] for i in indices])
    with torch.no_grad():
        return model(**batch).loss


# -- the same losses ------------------------------------------------------------------------------
def test_twenty_steps_with_and_without_the_cache_give_the_same_losses(tmp_path):
    records = write_images(tmp_path / "data", 10)
    (tmp_path / "data" / "train.json").write_text(json.dumps(records))
    model = {"vision": {"name": "tiny-clip"}, "projector": {"name": "mlp2x-gelu"},
             "lm": {"name": "tiny-qwen2", "train": "full"}}  # fmt: skip

    def run(name: str, mode: str):
        spec = {"model": model, "data": {"train": str(tmp_path / "data" / "train.json"), "max_length": 64},
                "train": {"output_dir": str(tmp_path / name), "max_steps": 20, "batch_size": 2, "lr": 2.0e-3,
                          "save_steps": 100, "logging_steps": 1, "scheduler": "linear", "feature_cache": mode,
                          "feature_cache_dir": str(tmp_path / "cache")}}  # fmt: skip
        result = train(spec)
        losses = [json.loads(line)["loss"] for line in result.log_file.read_text().splitlines() if '"loss"' in line]
        return result, torch.tensor(losses, dtype=torch.float64)

    plain, plain_losses = run("plain", "off")
    cached, cached_losses = run("cached", "on")
    again, again_losses = run("again", "auto")  # a second run finds every image cached
    assert len(plain_losses) == 20 and not plain.feature_cache["enabled"]
    assert cached.feature_cache["enabled"] and cached.feature_cache["computed"] == 10
    assert again.feature_cache["cached"] == 10 and again.feature_cache["computed"] == 0
    torch.testing.assert_close(cached_losses, plain_losses, rtol=0, atol=1e-6)
    torch.testing.assert_close(again_losses, plain_losses, rtol=0, atol=1e-6)
    # where the time goes: the tower runs without the cache and never with it; the shares add up to 1
    assert plain.time_shares["tower"] > 0 and cached.time_shares["tower"] == 0
    for shares in (plain.time_shares, cached.time_shares):
        assert shares["steps"] == 19 and shares["first_step"] == 2 and shares["step_ms"] > 0
        assert sum(shares[p] for p in PARTS) == pytest.approx(1, abs=1e-3)
        assert shares["lm_forward"] > 0 and shares["backward"] > 0
    assert format_shares(cached.time_shares).startswith("where a step's time goes (steps 2-20, ")


def test_batches_from_the_cache_give_the_loss_of_the_pixels_any_res_included(tmp_path):
    sizes = ((32, 32), (40, 96), (90, 30))  # any-res: 1x1, 1x3 and 3x1 layouts of different tile counts
    records = write_images(tmp_path / "images", 6, sizes=sizes)
    records[5] = {"id": "text", "conversations": [{"from": "human", "value": "Hello?"},
                                                  {"from": "gpt", "value": "red"}]}  # fmt: skip
    for name in ("tiny-clip-mlp-qwen2", "tiny-anyres-clip-mlp-qwen2"):
        model = tiny(name)
        dataset = LlavaDataset(records, model, image_folder=tmp_path / "images", max_length=256)
        plain = batch_loss(model, dataset, range(6))
        report = prepare_feature_cache(model, settings(tmp_path), [dataset], device=CPU)
        assert report.enabled and report.computed == 5 and dataset[0].keys() >= {"vision_features", "labels"}
        assert "pixel_values" not in dataset[0]
        cached = batch_loss(model, dataset, range(6))
        torch.testing.assert_close(cached, plain, rtol=0, atol=1e-6)


# -- misses ----------------------------------------------------------------------------------------
def test_changed_weights_options_or_preprocessing_change_the_fingerprint(monkeypatch):
    model = tiny()
    base, _ = tower_fingerprint(model, device_type="cpu")
    assert tower_fingerprint(tiny(), device_type="cpu")[0] == base  # the same tower, built again: a hit
    with torch.no_grad():
        next(model.vision.parameters()).view(-1)[0] += 1e-4  # a changed checkpoint
    assert tower_fingerprint(model, device_type="cpu")[0] != base
    assert tower_fingerprint(tiny(select_layer=-1), device_type="cpu")[0] != base  # a changed option
    assert tower_fingerprint(tiny(), device_type="cpu", autocast="bfloat16")[0] != base  # another autocast
    # preprocessing that differs although its repr, mean, std and size do not (a mirrored resize)
    model = tiny()
    original = model.vision.preprocessor
    mirrored = ImagePreprocessor(lambda image: original.transform(image).flip(-1), image_size=original.image_size,
                                 mean=original.mean, std=original.std)  # fmt: skip
    assert repr(mirrored) == repr(original)
    monkeypatch.setattr(type(model.vision), "preprocessor", property(lambda self: mirrored))
    assert tower_fingerprint(model, device_type="cpu")[0] != base


def test_a_changed_image_or_a_damaged_entry_is_a_miss_never_a_stale_hit(tmp_path):
    records = write_images(tmp_path / "images", 4)
    model = tiny()
    dataset = LlavaDataset(records, model, image_folder=tmp_path / "images", max_length=64)
    first = prepare_feature_cache(model, settings(tmp_path), [dataset], device=CPU)
    assert (first.images, first.cached, first.computed) == (4, 0, 4)
    write_images(tmp_path / "images", 1, seed=7)  # image 0 gets other pixels under the same name
    cache = FeatureCache(tmp_path / "cache", first.fingerprint or "", feature_shape=(16, 32))
    damaged = cache.entry_path(hash_file(tmp_path / "images" / "1.png"))
    damaged.write_bytes(damaged.read_bytes()[:100])  # a torn file (what atomic writes prevent)
    dataset = LlavaDataset(records, model, image_folder=tmp_path / "images", max_length=64)
    second = prepare_feature_cache(model, settings(tmp_path), [dataset], device=CPU)
    assert (second.fingerprint, second.cached, second.computed) == (first.fingerprint, 2, 2)
    from PIL import Image

    with torch.no_grad():
        expected = model.vision(model.vision.preprocessor([Image.open(tmp_path / "images" / "0.png")]))[0]
    # recomputed for the new pixels (a stale hit would be another image's features); a batched forward may
    # differ from this single one in the last bits, hence the tolerance
    torch.testing.assert_close(dataset[0]["vision_features"][0], expected, rtol=1e-5, atol=1e-5)


def test_two_processes_filling_one_cache_leave_only_complete_entries(tmp_path):
    write_images(tmp_path / "images", 40)
    cache_dir, go = tmp_path / "cache", tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "_fill_feature_cache.py"), str(cache_dir),
                               str(tmp_path / "images"), str(r), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in ready]  # fmt: skip
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    fingerprints = {r.read_text() for r in ready}
    model = tiny()
    cache = open_cache(model, cache_dir, device=CPU)
    assert fingerprints == {cache.fingerprint}  # the same seeded tower in three processes: one key
    go.write_text("")
    seen: set[Path] = set()
    while any(p.poll() is None for p in procs):  # read while both write: every entry is whole once visible
        for path in set(cache.directory.rglob(f"*{ENTRY_SUFFIX}")) - seen:
            assert cache.load(path.name.removesuffix(ENTRY_SUFFIX)) is not None, path
            seen.add(path)
        time.sleep(0.02)
    outputs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert [out.split() for out, _ in outputs] == [["40", "0"], ["40", "0"]]  # both computed and wrote all 40
    entries = sorted(cache.directory.rglob(f"*{ENTRY_SUFFIX}"))
    assert len(entries) == 40 and not [p for p in cache.directory.rglob("*") if ".part-" in p.name]
    from PIL import Image

    for image in sorted((tmp_path / "images").glob("*.png"))[:5]:
        entry = cache.load(hash_file(image))
        with torch.no_grad():
            expected = model.vision(model.vision.preprocessor([Image.open(image)]))[0]
        assert entry is not None  # complete and readable; the values are this image's (to batching's last bits)
        torch.testing.assert_close(entry.features, expected, rtol=1e-5, atol=1e-5)
    print(f"the reader loaded {len(seen)} entries while the two writers ran")


# -- policy, options, CLI ----------------------------------------------------------------------------
def test_the_policy_and_its_errors_name_the_keys(tmp_path):
    assert parse_train_settings({"max_steps": 1, "feature_cache": True}).feature_cache == "on"  # YAML's `on`
    assert parse_train_settings({"max_steps": 1, "feature_cache": False}).feature_cache == "off"
    with pytest.raises(ConfigError, match=r"train\.feature_cache = 'always' is not valid; .*'auto'"):
        parse_train_settings({"max_steps": 1, "feature_cache": "always"})
    with pytest.raises(ConfigError, match=r"train\.feature_cache_dtype = 'int8' is not valid; .*'bfloat16'"):
        parse_train_settings({"max_steps": 1, "feature_cache_dtype": "int8"})
    with pytest.raises(ConfigError, match=r"train\.feature_cache_max_gb = -1\.0 is not valid"):
        parse_train_settings({"max_steps": 1, "feature_cache_max_gb": -1})
    trained = zoo.build({"model": {"vision": {"name": "tiny-clip", "train": "full"}, "projector": "mlp2x-gelu",
                                   "lm": "tiny-qwen2"}})  # fmt: skip
    assert decide(settings(tmp_path), trained) == (False, "model.vision.train = 'full': the tower's features change "
                                                          "during training")  # fmt: skip
    with pytest.raises(ConfigError, match=r"train\.feature_cache = 'on' but model\.vision\.train = 'full'"):
        decide(settings(tmp_path, feature_cache="on"), trained)
    model = tiny()
    records = write_images(tmp_path / "images", 3)
    dataset = LlavaDataset(records, model, image_folder=tmp_path / "images", max_length=64)
    small = settings(tmp_path, feature_cache_max_gb=1e-6)  # 1 kB: three entries of 2 kB do not fit
    report = prepare_feature_cache(model, small, [dataset], device=CPU)
    assert not report.enabled and "past train.feature_cache_max_gb = 1e-06" in report.reason
    assert "pixel_values" in dataset[0]  # trains from the pixels
    with pytest.raises(ConfigError, match=r"train\.feature_cache = 'on' but the cache would grow to"):
        prepare_feature_cache(model, settings(tmp_path, feature_cache="on", feature_cache_max_gb=1e-6), [dataset],
                              device=CPU)  # fmt: skip


def test_bfloat16_entries_take_half_the_space(tmp_path):
    records = write_images(tmp_path / "images", 2)
    model = tiny()
    sizes = {}
    for dtype in (None, "bfloat16"):
        dataset = LlavaDataset(records, model, image_folder=tmp_path / "images", max_length=64)
        extra = {"feature_cache_dtype": dtype} if dtype else {}
        report = prepare_feature_cache(model, settings(tmp_path / str(dtype), **extra), [dataset], device=CPU)
        sizes[dtype] = report.bytes_written
        assert dataset[0]["vision_features"].dtype == (torch.bfloat16 if dtype else torch.float32)
        assert torch.isfinite(batch_loss(model, dataset, [0, 1]))
    assert sizes["bfloat16"] < 0.6 * sizes[None]


def test_zoo_cache_info_and_clear(tmp_path, capsys):
    records = write_images(tmp_path / "images", 3)
    model = tiny()
    dataset = LlavaDataset(records, model, image_folder=tmp_path / "images", max_length=64)
    report = prepare_feature_cache(model, settings(tmp_path), [dataset], device=CPU)
    root = tmp_path / "cache"
    (root / "notes.txt").write_text("mine")  # not zoo's: clear leaves it
    assert main(["cache", "info", "--dir", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    (tower,) = info["towers"]
    assert tower["fingerprint"] == report.fingerprint and tower["entries"] == 3 and tower["name"] == "tiny-clip"
    assert main(["cache", "clear", "nope", "--dir", str(root)]) == 2
    assert "no cached tower with fingerprint 'nope'" in capsys.readouterr().err
    assert main(["cache", "clear", str(report.fingerprint)[:8], "--dir", str(root)]) == 0
    assert "removed 1 towers, 3 images" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]


def test_fill_reports_unreadable_images_by_on_error(tmp_path):
    model = tiny()
    cache = open_cache(model, tmp_path / "cache", device=CPU)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    images = {"0" * 64: str(tmp_path / "bad.png")}
    assert fill(cache, model, images, batch_size=2, device=CPU, on_error="skip")[:2] == (0, 1)
    with pytest.raises(zoo.ZooError, match=r"feature cache fill: image .*bad\.png.* is not an image file"):
        fill(cache, model, images, batch_size=2, device=CPU, on_error="error")
