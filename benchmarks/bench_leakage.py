"""Leakage finder: the near-duplicate threshold on real radiographs, the time to index a dataset, and a
MURA-size tree of identical files (time and peak memory).

    python benchmarks/bench_leakage.py [--sample 300] [--workers 2] [--skip-threshold] [--skip-timing]
                                       [--skip-scale] [--scale-share 1.0] [--scale-tree DIR]
                                       [--scale-other-bytes]

1. Threshold. From distinct FracAtlas and Bone Fracture Multi-Region radiographs (``--sample`` of each),
   it makes the copies a leaked file usually is: JPEG re-encoded (quality 60), resized to half, cropped
   5% on every side, contrast changed (gamma 0.7, and autocontrast with 2% cut-off), resized +
   re-encoded + contrast together, flipped left-right or turned by 90 degrees (and re-encoded), and,
   beyond what the finder is built for, turned by 10 degrees. It prints how far their pHashes move (the
   finder's distance: the smallest over the picture as it is and in its flips and turns), next to the
   distances between pairs of different FracAtlas radiographs, for each threshold: the share of copies
   caught and of different radiographs wrongly matched.
2. Time. It runs `find_leakage` on the published Multi-Region layout (materialised with the data's
   ``materialize.py``) and on FracAtlas, prints seconds per file, and extrapolates to 40,000 files.
3. Scale. It writes a MURA v1.1 tree with the published layout and counts whose 40,005 images are one
   blank placeholder PNG (`tests.mura_tree.make_identical_mura_tree`; ``--scale-share`` writes a share of
   it) and measures, each in its own process: ``python -m mura_core index`` with the leakage check, the
   same with ``--no-leakage``, and the Dataset explorer's leakage panel (the page run by Streamlit's
   ``AppTest``, the panel switched on). It prints wall time and peak memory (the process's maximum resident
   set) of each, the counts reported, the pairs listed, and whether the target (<= 2 minutes, <= 2 GiB)
   is met. ``--scale-other-bytes``: each file holds that picture in bytes of its own (a PNG text chunk),
   so no two files are identical but all are one picture. Parts 1 and 2 need ``../shared/data``; part 3
   needs nothing outside the repository.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mura_core.datasets import index_dataset, leakage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FRACATLAS = SHARED / "fracatlas"
MULTI_REGION = SHARED / "bone-fracture-multi-region"


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _crop(image: Image.Image, share: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * share), round(h * share)
    return image.crop((dx, dy, w - dx, h - dy))


def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    table = [round(255 * (v / 255) ** gamma) for v in range(256)]
    return image.point(table)


COPIES = {
    "re-encoded (JPEG q60)": lambda im: _jpeg(im, 60),
    "resized to 1/2": lambda im: im.resize((im.width // 2, im.height // 2), Image.BILINEAR),
    "cropped 5% a side": lambda im: _crop(im, 0.05),
    "gamma 0.7": lambda im: _gamma(im, 0.7),
    "autocontrast 2%": lambda im: ImageOps.autocontrast(im, cutoff=2),
    "resized + re-encoded + gamma": lambda im: _jpeg(_gamma(im.resize((im.width // 2, im.height // 2)), 0.8), 70),
    "flipped left-right + re-encoded": lambda im: _jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 80),
    "turned 90 deg + re-encoded": lambda im: _jpeg(im.transpose(Image.Transpose.ROTATE_90), 80),
}
BEYOND = {"turned 10 deg (not built for)": lambda im: im.rotate(10, resample=Image.BILINEAR)}
"""Copies the finder is not built to catch, shown for what they do to the hash (not in the totals)."""


def _hash_of(image: Image.Image, folder: Path, name: str) -> tuple[int, tuple[int, ...]] | None:
    path = folder / f"{name}.png"
    image.save(path)
    _, phash, turned, _ = leakage.fingerprint_file(path)
    return None if phash is None else (phash, turned)


def _distance(a: tuple[int, tuple[int, ...]], b: tuple[int, tuple[int, ...]]) -> int:
    """The finder's distance (`leakage.near_pairs`): the smallest with or without a flip or turn."""
    return int(leakage.turned_distance(a[0], np.array(a[1], np.uint64), b[0], np.array(b[1], np.uint64)))


def threshold_table(sample: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sources = sorted(FRACATLAS.glob("images/*.jpg"))
    chosen = [sources[k] for k in rng.choice(len(sources), sample, replace=False)]
    region = sorted(p for p in (MULTI_REGION / "images").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    chosen += [region[k] for k in rng.choice(len(region), sample, replace=False)]
    moved: dict[str, list[int]] = {name: [] for name in {**COPIES, **BEYOND}}
    originals, turned = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for k, path in enumerate(chosen):
            try:
                image = Image.open(path).convert("L")
                image.load()
            except OSError:
                continue
            _, phash, turns, _ = leakage.fingerprint_file(path)
            if phash is None:
                continue
            if k < sample:
                originals.append(phash)
                turned.append(turns)
            for name, make in {**COPIES, **BEYOND}.items():
                copy = _hash_of(make(image), folder, f"{k}_{len(moved[name])}")
                if copy is not None:
                    moved[name].append(_distance((phash, turns), copy))
    hashes, turned = np.array(originals, dtype=np.uint64), np.array(turned, dtype=np.uint64)
    i, j = np.triu_indices(len(hashes), 1)
    as_is = leakage.hamming(hashes[i], hashes[j])
    different = leakage.turned_distance(hashes[i], turned[i], hashes[j], turned[j])
    print(f"pHash distance (of 64 bits): copies of {len(chosen)} radiographs; "
          f"{len(different):,} pairs of different FracAtlas radiographs")
    for name, values in moved.items():
        v = np.array(values)
        print(f"  {name:30s} n={len(v):4d} median {np.median(v):4.1f}  95th pct {np.percentile(v, 95):4.1f}  "
              f"max {v.max():3d}")
    for label, values in (("different radiographs", different), ("... without flips and turns", as_is)):
        print(f"  {label:30s} min {values.min()}  0.1th pct {np.percentile(values, 0.1):.1f}  "
              f"1st pct {np.percentile(values, 1):.1f}  median {np.median(values):.1f}")
    every = np.concatenate([np.array(moved[name]) for name in COPIES])
    print("threshold  copies caught  different pairs matched (share; expected among 40,000 files' pairs; "
          "without flips and turns)")
    for t in range(4, 17, 2):
        share = float((different <= t).mean())
        print(f"  <= {t:2d}     {float((every <= t).mean()):6.1%}        {share:.5%}  ~{share * 40_000 ** 2 / 2:,.0f}"
              f"  ({int((as_is <= t).sum())} vs {int((different <= t).sum())} pairs)")


def timing(workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        import subprocess

        subprocess.run([sys.executable, str(MULTI_REGION / "materialize.py"), tmp], check=True,
                       stdout=subprocess.DEVNULL)
        total_files, total_seconds = 0, 0.0
        for root, fmt in ((Path(tmp), "folders"), (FRACATLAS, "fracatlas")):
            table = index_dataset(root, fmt).table
            start = time.perf_counter()
            report = leakage.find_leakage(table, workers=workers)
            seconds = time.perf_counter() - start
            total_files += len(table)
            total_seconds += seconds
            print(f"{root.name if fmt != 'folders' else 'multi-region (published layout)'}: {len(table):,} files "
                  f"in {seconds:.1f} s ({1000 * seconds / len(table):.2f} ms a file, {workers} threads)")
            for line in leakage.summary_lines(report):
                print("   ", line)
    print(f"measured: {total_files:,} files in {total_seconds:.1f} s; extrapolated linearly to 40,000 files: "
          f"{total_seconds / total_files * 40_000:.0f} s (an extrapolation, not a measurement)")


TARGET_SECONDS, TARGET_BYTES = 120, 2 * 1024**3
"""What a MURA-size tree of identical files must stay within: the leakage check on, <= 2 minutes, <= 2 GiB."""

EXPLORER = """
import sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=600).run()
at.switch_page("pages/dataset.py").run()
assert not at.exception, [e.value for e in at.exception]
switch = next(t for t in at.toggle if t.label.startswith("Find identical"))
start = time.perf_counter()
switch.set_value(True).run()
assert not at.exception, [e.value for e in at.exception]
print(f"panel: {time.perf_counter() - start:.1f} s after switching it on")
for frame in at.dataframe:
    if "near-duplicates" in frame.value.columns or "near-duplicate inside" in frame.value.columns:
        for row in frame.value.to_dict("records"):
            print("panel:", ", ".join(f"{key} {value}" for key, value in row.items()))
"""
"""The Dataset explorer with its leakage panel switched on (argv: app.py), as `tests/test_app.py` runs it."""


def _measured(command: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run a command in its own process: (wall seconds, its peak resident memory in bytes, its output)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{text[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, text  # Linux gives kilobytes


def scale(share: float, tree: Path | None = None, other_bytes: bool = False) -> None:
    """Part 3: the leakage check on a MURA-layout tree of identical placeholder images (written into
    ``tree`` and kept there, or read from it when it holds one already; by default a temporary folder);
    with ``other_bytes``, each file holds the same picture in its own bytes."""
    from tests.mura_tree import make_identical_mura_tree

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if tree is not None and (tree / "MURA-v1.1").is_dir():
            mura = tree / "MURA-v1.1"
        else:
            mura = make_identical_mura_tree(tree or Path(tmp), share, other_bytes=other_bytes)
        files = sum(len(Path(mura, f"{split}_image_paths.csv").read_text().splitlines())
                    for split in ("train", "valid"))
        print(f"MURA v1.1 layout in {mura.parent}, {files:,} placeholder PNGs of one picture "
              f"({'each in its own bytes' if other_bytes else 'identical bytes'}) "
              f"(written or found in {time.perf_counter() - start:.1f} s)")
        index = [sys.executable, "-m", "mura_core", "index", str(mura), "--out", str(Path(tmp, "index.csv"))]
        runs = {
            "index, leakage check on": index + ["--duplicates", str(Path(tmp, "pairs.csv"))],
            "index --no-leakage": index + ["--no-leakage"],
            "Dataset explorer, leakage panel on": [sys.executable, "-c", EXPLORER, str(ROOT / "app.py")],
        }
        env = {"MURA_DATA_ROOTS": str(mura), "MURA_WEIGHTS": str(Path(tmp, "no-weights"))}
        measured = {}
        for name, command in runs.items():
            seconds, peak, text = _measured(command, env)
            measured[name] = seconds, peak
            print(f"{name}: {seconds:.1f} s, peak memory {peak / 1024**3:.2f} GiB")
            shown = [line for line in text.splitlines()
                     if line.startswith(("  valid", "  within", "  memory baseline", "panel"))]
            for line in shown:
                print("   ", line.strip())
        pairs = len(Path(tmp, "pairs.csv").read_text().splitlines()) - 1
        print(f"pairs listed in the CSV: {pairs:,} (one per leaking file and pair of splits)")
        for name in ("index, leakage check on", "Dataset explorer, leakage panel on"):
            seconds, peak = measured[name]
            met = seconds <= TARGET_SECONDS and peak <= TARGET_BYTES
            print(f"{name}: {seconds / TARGET_SECONDS:.2f} of the time allowed, {peak / TARGET_BYTES:.2f} of the "
                  f"memory allowed ({TARGET_SECONDS} s, 2 GiB): {'met' if met else 'NOT met'}")
        base_seconds, base_peak = measured["index --no-leakage"]
        seconds, peak = measured["index, leakage check on"]
        print(f"the leakage check costs {seconds / base_seconds:.1f}x the time and {peak / base_peak:.1f}x the peak "
              f"memory of indexing alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-threshold", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scale-share", type=float, default=1.0,
                        help="share of MURA's 40,005 images the identical-files tree holds (part 3)")
    parser.add_argument("--scale-tree", type=Path,
                        help="folder to keep that tree in (and reuse), instead of a temporary one: removing "
                             "40,005 files can take minutes")
    parser.add_argument("--scale-other-bytes", action="store_true",
                        help="part 3's files hold the same picture in other bytes each (a PNG text chunk)")
    args = parser.parse_args()
    if not args.skip_threshold:
        threshold_table(args.sample)
    if not args.skip_timing:
        timing(args.workers)
    if not args.skip_scale:
        scale(args.scale_share, args.scale_tree, args.scale_other_bytes)


if __name__ == "__main__":
    main()
