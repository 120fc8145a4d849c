"""Leakage finder: identical files, near-duplicates and patients across splits, the leak-free split, `index`."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from mura_core import cli
from mura_core.datasets import index_dataset, leakage
from train import memory_baseline

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "weights" / "samples").glob("*.jpg"))  # 8 distinct FracAtlas radiographs (CC BY 4.0)


def _gray(path: Path) -> Image.Image:
    return Image.open(path).convert("L")


def _save_jpeg(image: Image.Image, path: Path, quality: int = 90) -> None:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    path.write_bytes(buffer.getvalue())


def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    return image.point([round(255 * (v / 255) ** gamma) for v in range(256)])


def _crop(image: Image.Image, share: float) -> Image.Image:
    dx, dy = round(image.width * share), round(image.height * share)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


# What each test file is: (name, how it is made from the samples, what it leaks)
TEST_FILES = {
    "copy0.jpg": ("identical", 0),
    "copy1.jpg": ("identical", 1),
    "reencoded2.jpg": ("near", 2),
    "resized3.jpg": ("near", 3),
    "contrast4.png": ("near", 4),
    "cropped5.jpg": ("near", 5),
    "mirrored3.jpg": ("turned", 3),
    "quarter5.jpg": ("turned", 5),
    "own6.jpg": ("none", 6),
    "own7.jpg": ("none", 7),
}


def _leaky_folders(root: Path) -> Path:
    """``root/{train,test}/{normal,abnormal}``: train holds samples 0-5, test copies of them made as
    TEST_FILES says (two byte-identical, four altered, two flipped or turned and re-encoded) and samples
    6 and 7, which train lacks."""
    for k, source in enumerate(SAMPLES[:6]):
        folder = root / "train" / ("abnormal" if k % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / f"train{k}.jpg")
    for name, (kind, k) in TEST_FILES.items():
        folder = root / "test" / ("abnormal" if k % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        image = _gray(SAMPLES[k])
        if kind in ("identical", "none"):
            shutil.copyfile(SAMPLES[k], folder / name)
        elif name.startswith("reencoded"):
            _save_jpeg(image, folder / name, quality=60)
        elif name.startswith("resized"):
            _save_jpeg(image.resize((image.width // 2, image.height // 2), Image.BILINEAR), folder / name)
        elif name.startswith("contrast"):
            ImageOps.autocontrast(_gamma(image, 0.8), cutoff=1).save(folder / name)
        elif kind == "turned":
            turn = Image.Transpose.FLIP_LEFT_RIGHT if name.startswith("mirrored") else Image.Transpose.ROTATE_90
            _save_jpeg(image.transpose(turn), folder / name, quality=80)
        else:
            _save_jpeg(_crop(image, 0.02), folder / name)
    return root


@pytest.fixture
def leaky(tmp_path) -> Path:
    return _leaky_folders(tmp_path / "leaky")


def test_identical_and_near_duplicates_are_counted(leaky):
    table = index_dataset(leaky).table
    report = leakage.find_leakage(table)
    row = report.summary.set_index(["split_a", "split_b"]).loc[("test", "train")]
    assert (row["identical"], row["near"], row["patients"]) == (2, 6, 0)
    pairs = report.pairs.assign(name_a=lambda p: p["path_a"].map(lambda s: Path(s).name),
                                name_b=lambda p: p["path_b"].map(lambda s: Path(s).name))
    found = {(a, b, kind) for a, b, kind in pairs[["name_a", "name_b", "kind"]].itertuples(index=False)}
    expected = {(name, f"train{k}.jpg", kind) for name, (kind, k) in TEST_FILES.items() if kind != "none"}
    assert found == expected
    assert (pairs.loc[pairs["kind"] == "identical", "distance"] == 0).all()
    # other bytes; the hash may even be the same
    assert pairs.loc[pairs["kind"] != "identical", "distance"].between(0, leakage.NEAR_DISTANCE).all()
    assert leakage.summary_lines(report)[0] == "test vs train: 2 identical files, 6 near-duplicates"
    assert report.distinct == len(table) - 2


def test_the_threshold_decides_what_is_near(leaky):
    table = index_dataset(leaky).table
    report = leakage.find_leakage(table)
    near = report.pairs.loc[report.pairs["kind"] != "identical", "distance"]
    tighter = int(near.max()) - 1
    strict = leakage.find_leakage(table, max_distance=tighter, prints=report.files)
    assert strict.summary[["identical", "near"]].iloc[0].tolist() == [2, int((near <= tighter).sum())]
    assert int((near <= tighter).sum()) < 6


def test_flips_and_quarter_turns_are_found_only_with_the_turned_hashes(leaky):
    table = index_dataset(leaky).table
    report = leakage.find_leakage(table)
    assert set(report.pairs.loc[report.pairs["kind"] == "turned", "path_a"].map(lambda p: Path(p).name)) == {
        "mirrored3.jpg", "quarter5.jpg"}
    as_is = leakage.find_leakage(table, prints=report.files.drop(columns="turned"))
    assert as_is.summary["near"].tolist() == [4] and "turned" not in set(as_is.pairs["kind"])


def test_leak_free_split_has_no_straddling_group(leaky):
    table = index_dataset(leaky).table
    report = leakage.find_leakage(table)
    split = leakage.leak_free_split(table, report, {"train": 0.5, "test": 0.5}, seed=0)
    assert set(split["split"]) == {"train", "test"}
    assert (split.groupby(report.files["group"].to_numpy())["split"].nunique() == 1).all()
    after = leakage.find_leakage(split, prints=report.files)
    assert after.summary[["identical", "near"]].to_numpy().sum() == 0
    assert after.pairs.empty
    again = leakage.leak_free_split(table, report, {"train": 0.5, "test": 0.5}, seed=0)
    assert again["split"].tolist() == split["split"].tolist()  # the same seed gives the same split


def test_leak_free_split_checks_its_input(leaky):
    table = index_dataset(leaky).table
    report = leakage.find_leakage(table)
    with pytest.raises(ValueError, match="not the ones"):
        leakage.leak_free_split(table.iloc[1:], report, {"train": 0.8, "test": 0.2})
    with pytest.raises(ValueError, match="positive share"):
        leakage.leak_free_split(table, report, {"train": 0.8, "test": 0.0})


def test_patients_on_both_sides_and_their_groups(tmp_path):
    rows = []
    for k, (split, patient) in enumerate([("train", "p1"), ("train", "p2"), ("valid", "p1"), ("valid", "p3")]):
        path = tmp_path / f"image{k}.jpg"
        shutil.copyfile(SAMPLES[k], path)
        rows.append({"path": str(path), "split": split, "patient": patient, "label": k % 2})
    report = leakage.find_leakage(pd.DataFrame(rows))
    assert report.summary[["split_a", "split_b", "identical", "near", "patients"]].values.tolist() == [
        ["valid", "train", 0, 0, 1]]
    groups = report.files["group"].tolist()
    assert groups[0] == groups[2] and len({groups[0], groups[1], groups[3]}) == 3
    assert "1 patients on both sides" in leakage.summary_lines(report)[0]


def test_unreadable_files_are_compared_by_bytes(tmp_path):
    truncated = SAMPLES[0].read_bytes()[:700]
    rows = []
    for split in ("train", "test"):
        path = tmp_path / f"{split}.jpg"
        path.write_bytes(truncated)
        rows.append({"path": str(path), "split": split, "patient": "", "label": 0})
    report = leakage.find_leakage(pd.DataFrame(rows))
    assert report.summary["identical"].tolist() == [1]
    assert (report.files["error"].str.contains("truncated")).all()
    assert any("could not be decoded" in line for line in leakage.summary_lines(report))


def test_near_pairs_matches_all_pairs():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300, dtype=np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, d, replace=False))) for d in rng.integers(0, 12, 200)]
    hashes = np.concatenate([base, base[:200] ^ np.array(flips, dtype=np.uint64)])
    for max_distance in (0, 3, 6, 11):
        found = leakage.near_pairs(hashes, max_distance)
        i, j = np.triu_indices(len(hashes), 1)
        distance = leakage.hamming(hashes[i], hashes[j])
        close = distance <= max_distance
        assert set(zip(found["i"], found["j"])) == set(zip(i[close], j[close]))
        assert len(found) >= 1 and not found["turned"].any()


def test_near_pairs_with_turned_hashes_matches_all_pairs():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 120, dtype=np.uint64)
    turned = rng.integers(0, 2**63, (120, 3), dtype=np.uint64)
    # pictures 100-119 are pictures 0-19 turned: their hash is near one of the originals' turned hashes
    noise = np.array([sum(1 << int(b) for b in rng.choice(64, d, replace=False)) for d in rng.integers(0, 9, 20)],
                     dtype=np.uint64)
    hashes[100:] = turned[np.arange(20), rng.integers(0, 3, 20)] ^ noise
    for max_distance in (0, 4, 8):
        found = leakage.near_pairs(hashes, max_distance, turned)
        i, j = np.triu_indices(len(hashes), 1)
        plain = leakage.hamming(hashes[i], hashes[j])
        turn = np.minimum(leakage.hamming(turned[i], hashes[j][:, None]).min(1),
                          leakage.hamming(turned[j], hashes[i][:, None]).min(1))
        close = np.minimum(plain, turn) <= max_distance
        np.testing.assert_array_equal(leakage.turned_distance(hashes[i], turned[i], hashes[j], turned[j]),
                                      np.minimum(plain, turn))
        assert set(zip(found["i"], found["j"])) == set(zip(i[close], j[close]))
        by_turn = dict(zip(zip(found["i"], found["j"]), found["turned"]))
        assert all(by_turn[pair] == (p > max_distance) for pair, p in zip(zip(i[close], j[close]), plain[close]))
    assert len(leakage.near_pairs(hashes, 8, turned)) >= 20


def test_search_and_memory_baseline_give_the_same_in_small_blocks(monkeypatch):
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**63, 60, dtype=np.uint64)
    hashes = np.concatenate([base, base[:30] ^ np.uint64(0b1011), np.repeat(base[:1], 40)])  # 41 share a hash
    turned = rng.integers(0, 2**63, (len(hashes), 7), dtype=np.uint64)
    labels = np.arange(len(hashes)) % 2
    whole = leakage.near_pairs(hashes, 6, turned)
    remembered = leakage.memory_scores(np.column_stack([hashes[:50], turned[:50]]), hashes[50:], labels[50:])
    monkeypatch.setattr(leakage, "BLOCK", 5)  # candidate pairs and distances 5 at a time
    pd.testing.assert_frame_equal(leakage.near_pairs(hashes, 6, turned), whole)
    for got, want in zip(leakage.memory_scores(np.column_stack([hashes[:50], turned[:50]]), hashes[50:],
                                               labels[50:]), remembered):
        np.testing.assert_array_equal(got, want)
    assert len(whole) >= 41 * 40 // 2 + 30


def test_index_command_prints_leakage_and_writes_pairs(leaky, tmp_path, capsys):
    out, pairs_csv = tmp_path / "index.csv", tmp_path / "pairs.csv"
    assert cli.main(["index", str(leaky), "--out", str(out), "--duplicates", str(pairs_csv)]) == 0
    printed = capsys.readouterr().out
    assert "  test vs train: 2 identical files, 6 near-duplicates" in printed
    memory = next(line for line in printed.splitlines() if line.startswith("  memory baseline, test vs train:"))
    assert float(memory.split("accuracy ")[1].split(",")[0]) >= 0.8  # the 8 copies pass by memory
    pairs = pd.read_csv(pairs_csv)
    assert list(pairs.columns) == list(leakage.PAIR_COLUMNS)
    assert pairs["kind"].value_counts().to_dict() == {"identical": 2, "near": 4, "turned": 2}
    assert (pairs["split_a"] == "test").all() and (pairs["split_b"] == "train").all()
    assert cli.main(["index", str(leaky), "--out", str(out), "--no-leakage"]) == 0
    assert "identical files" not in capsys.readouterr().out


def test_leak_free_split_command(leaky, tmp_path):
    split_file = tmp_path / "split.csv"
    done = subprocess.run([sys.executable, "-m", "train.leak_free_split", str(leaky), "--out", str(split_file),
                           "--shares", "train=0.5,test=0.5"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = done.stdout.split("written to")[1]
    assert "test vs train: 0 identical files, 0 near-duplicates" in written
    table = index_dataset(leaky, split_file=split_file).table
    assert set(table["split"]) == {"train", "test"}


def test_memory_baseline_scores_by_the_nearest_training_picture():
    train_hashes = np.array([0b0000, 0b1111, 0b0011_0011], np.uint64)
    labels = np.array([0, 1, 1])
    test_hashes = np.array([0b0001, 0b0111, 0b0011, 0b0011_0011], np.uint64)
    scores, nearest = leakage.memory_scores(test_hashes, train_hashes, labels)
    np.testing.assert_array_equal(nearest, [1, 1, 2, 0])
    # distances to the nearest normal / abnormal: (1, 3), (3, 1), (2, 2: a tie, one normal and two
    # abnormal pictures at distance 2 -> share 2/3), (4, 0)
    np.testing.assert_allclose(scores, [0.5 - 2 / 128, 0.5 + 2 / 128, 0.5 + (2 / 3 - 0.5) / 128, 0.5 + 4 / 128])
    with pytest.raises(ValueError, match="both normal and abnormal"):
        leakage.memory_scores(test_hashes, train_hashes, np.ones(3))


def test_memory_baseline_command_passes_the_leaked_images_by_memory(leaky, tmp_path, capsys):
    out = tmp_path / "memory.json"
    assert memory_baseline.main([str(leaky), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["test_images"], result["train_images"]) == (10, 6)
    assert (result["test_identical_in_train"], result["test_near_in_train"]) == (2, 6)
    assert result["tp"] + result["tn"] >= 8  # every copied, altered or turned training picture keeps its label
    assert sum(band["images"] for band in result["by_distance"]) == 10
    assert result["by_distance"][0] == {"distance": "0-0", "images": 5, "accuracy": 1.0}
    assert "memory baseline, test vs train: 10 test images (2 identical, 6 near-identical" in capsys.readouterr().out


def _placeholder(path: Path, note: str = "") -> Path:
    """A tiny blank PNG; a different ``note`` (a text chunk) gives other bytes of the same picture."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if note:
        info.add_text("note", note)
    Image.new("L", (16, 16), 128).save(path, "PNG", pnginfo=info)
    return path


def test_a_large_group_of_identical_files_is_counted_exactly_and_listed_once_a_file(tmp_path, monkeypatch):
    from mura_core import imaging

    one = _placeholder(tmp_path / "placeholder.png").read_bytes()
    rows = []
    for split, n in (("train", 2400), ("val", 500), ("test", 100)):
        folder = tmp_path / split
        folder.mkdir()
        for k in range(n):
            (folder / f"{k:04d}.png").write_bytes(one)
            rows.append({"path": str(folder / f"{k:04d}.png"), "split": split, "patient": "", "label": k % 2})
    for k, sample in enumerate(SAMPLES[:3]):  # distinct radiographs beside them, one per split
        rows.append({"path": str(sample), "split": ("train", "val", "test")[k], "patient": "", "label": 1})
    decoded = []
    real_thumbnail = imaging.thumbnail
    monkeypatch.setattr(imaging, "thumbnail", lambda data, side: decoded.append(1) or real_thumbnail(data, side))
    table = pd.DataFrame(rows)
    report = leakage.find_leakage(table, workers=1)
    assert len(decoded) == 4  # the identical bytes are decoded once (two threads might both meet the first)
    summary = report.summary.set_index(["split_a", "split_b"])[["identical", "near"]]
    assert summary.to_dict("index") == {("test", "val"): {"identical": 100, "near": 0},
                                        ("test", "train"): {"identical": 100, "near": 0},
                                        ("val", "train"): {"identical": 500, "near": 0}}
    assert report.within.set_index("split")[["files", "identical", "near"]].to_dict("index") == {
        "test": {"files": 101, "identical": 100, "near": 0}, "val": {"files": 501, "identical": 500, "near": 0},
        "train": {"files": 2401, "identical": 2400, "near": 0}}
    assert report.distinct == 4 and report.files["group"].iloc[:3000].nunique() == 1
    # one pair per leaking file and pair of splits (not 100 x 2400 + ...), against the first copy by path
    assert len(report.pairs) == 700
    first_train, first_val = str(tmp_path / "train" / "0000.png"), str(tmp_path / "val" / "0000.png")
    assert report.pairs.groupby(["split_a", "split_b"])["path_b"].unique().map(list).to_dict() == {
        ("test", "train"): [first_train], ("test", "val"): [first_val], ("val", "train"): [first_train]}
    memory = leakage.memory_summary(report, table["label"])
    assert memory["images"].tolist() == [101, 501]


def test_many_files_of_one_picture_in_other_bytes_are_near_duplicates_of_each_other():
    # 3,000 files of one picture, each in other bytes (fingerprints given: no file is read)
    n = 3000
    prints = pd.DataFrame({"path": [f"/data/{k}.png" for k in range(n)], "sha256": [f"{k:064x}" for k in range(n)],
                           "phash": pd.Series([0x0F0F_F0F0_1234_5678] * n, dtype=object),
                           "turned": pd.Series([tuple(range(1, 8))] * n, dtype=object), "error": [""] * n})
    table = pd.DataFrame({"path": prints["path"], "split": ["train"] * 2000 + ["test"] * 1000, "patient": "",
                          "label": np.arange(n) % 2})
    report = leakage.find_leakage(table, prints=prints)
    assert report.summary[["identical", "near"]].values.tolist() == [[0, 1000]]
    assert report.within[["identical", "near"]].values.tolist() == [[0, 1000], [0, 2000]]
    assert report.files["group"].nunique() == 1 and report.distinct == n
    assert len(report.pairs) == 1000 and set(report.pairs["path_b"]) == {"/data/0.png"}
    assert set(report.pairs["kind"]) == {"near"} and (report.pairs["distance"] == 0).all()
    rows = leakage.memory_baseline(report, table["label"])
    assert len(rows) == 1000 and (rows["nearest"] == 0).all() and np.allclose(rows["score"], 0.5)


def test_files_of_one_picture_in_other_bytes_are_hashed_once(tmp_path, monkeypatch):
    hashed = []
    real_phash = leakage._phash
    monkeypatch.setattr(leakage, "_phash", lambda picture: hashed.append(1) or real_phash(picture))
    rows = [{"path": str(_placeholder(tmp_path / f"{k}.png", note=str(k))), "split": "test" if k < 100 else "train",
             "patient": ""} for k in range(300)]
    report = leakage.find_leakage(pd.DataFrame(rows), workers=1)
    assert len(hashed) == 1 + len(leakage.TURNS)  # 300 files, each in other bytes: one picture to hash
    assert report.distinct == 300 and report.summary[["identical", "near"]].values.tolist() == [[0, 100]]


def _all_pairs(table: pd.DataFrame, prints: pd.DataFrame, max_distance: int) -> dict:
    """The leakage as comparing every pair of files finds it (what `find_leakage` did before it grouped
    files by content and picture): summary and within counts, groups, each counted file's nearest distance."""
    files = table.reset_index(drop=True)
    found = prints.set_index("path").loc[files["path"]]
    sha, split = found["sha256"].to_numpy(), files["split"].to_numpy()
    decoded = found["phash"].notna().to_numpy()
    hashes = np.array([int(h) if ok else 0 for h, ok in zip(found["phash"], decoded)], np.uint64)
    turned = np.array([t if ok else (0,) * 7 for t, ok in zip(found["turned"], decoded)], np.uint64)
    i, j = np.triu_indices(len(files), 1)
    same = (sha[i] == sha[j]) & (sha[i] != "")
    distance = np.where(same, 0, leakage.turned_distance(hashes[i], turned[i], hashes[j], turned[j]))
    alike = same | (decoded[i] & decoded[j] & (distance <= max_distance))
    pairs = pd.DataFrame({"a": np.concatenate([i, j]), "b": np.concatenate([j, i]),
                          "same": np.tile(same, 2), "alike": np.tile(alike, 2), "distance": np.tile(distance, 2)})
    pairs = pairs[pairs["alike"]].assign(split_a=lambda p: split[p["a"]], split_b=lambda p: split[p["b"]])
    sizes = files["split"].value_counts().to_dict()
    splits = leakage.split_order(list(sizes), sizes)
    summary, nearest = {}, {}
    for k, a in enumerate(splits):
        for b in splits[k + 1:] + [a]:
            between = pairs[(pairs["split_a"] == a) & (pairs["split_b"] == b)]
            identical = set(between.loc[between["same"], "a"])
            summary[(a, b)] = (len(identical), len(set(between["a"]) - identical))
            if a != b:
                nearest[(a, b)] = between.groupby("a")["distance"].min().rename(lambda r: files["path"][r]).to_dict()
    parent = list(range(len(files)))

    def root(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    by_patient = files.reset_index().groupby("patient")["index"].first()
    links = list(zip(pairs["a"], pairs["b"])) + [(r, by_patient[p]) for r, p in enumerate(files["patient"]) if p]
    for a, b in links:
        parent[root(a)] = root(b)
    groups = {}
    for r in range(len(files)):
        groups.setdefault(root(r), set()).add(r)
    return {"summary": summary, "nearest": nearest, "groups": sorted(map(sorted, groups.values()))}


@pytest.fixture
def mixed(leaky) -> pd.DataFrame:
    """The leaky folders, with a third split, copies inside a split, one picture in three files of other bytes,
    an unreadable file copied across splits, a file with two near-duplicates in train, and patients."""
    table = index_dataset(leaky).table.assign(patient="")
    extra = leaky / "extra"
    extra.mkdir()
    rows = []
    for k, (name, split, patient) in enumerate([("a.png", "val", "p1"), ("b.png", "train", ""), ("c.png", "test", "p1"),
                                                ("d.png", "val", "p2"), ("e.png", "train", "p2")]):
        _placeholder(extra / name, note=str(k % 3))  # a, d: the same bytes; the rest other bytes, one picture
        rows.append({"path": str(extra / name), "split": split, "patient": patient, "label": k % 2})
    for name, split in (("copy-train.jpg", "train"), ("copy-val.jpg", "val"), ("cut-test.jpg", "test"),
                        ("cut-val.jpg", "val")):
        data = SAMPLES[0].read_bytes() if name.startswith("copy") else SAMPLES[6].read_bytes()[:700]
        (extra / name).write_bytes(data)
        rows.append({"path": str(extra / name), "split": split, "patient": "", "label": 0})
    # a second, farther training copy of what test's reencoded2.jpg copies (its path sorts first)
    _save_jpeg(_crop(_gray(SAMPLES[2]), 0.02), extra / "cropped2.jpg")
    rows.append({"path": str(extra / "cropped2.jpg"), "split": "train", "patient": "", "label": 0})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def test_grouped_counts_match_comparing_every_pair_of_files(mixed):
    prints = leakage.fingerprints(mixed["path"].tolist())
    for max_distance in (0, 3, leakage.NEAR_DISTANCE, 10):
        for given in (prints, prints.drop(columns="turned")):
            report = leakage.find_leakage(mixed, max_distance, prints=given)
            expected = _all_pairs(mixed, given.assign(turned=given.get("turned", given["phash"].map(
                lambda h: None if h is None else (h,) * 7))), max_distance)
            found = {(r.split_a, r.split_b): (r.identical, r.near) for r in report.summary.itertuples()}
            found.update({(r.split, r.split): (r.identical, r.near) for r in report.within.itertuples()})
            assert found == expected["summary"]
            groups = report.files.reset_index().groupby("group")["index"].agg(sorted).tolist()
            assert sorted(groups) == expected["groups"]
            # each counted file once per pair of splits, against a copy at the smallest distance there
            listed = {key: dict(zip(part["path_a"], part["distance"]))
                      for key, part in report.pairs.groupby(["split_a", "split_b"])}
            assert {key: value for key, value in listed.items() if value} == {
                key: value for key, value in expected["nearest"].items() if value}
    assert expected["summary"][("test", "val")] == (2, 1)  # the check above met identical and near files
