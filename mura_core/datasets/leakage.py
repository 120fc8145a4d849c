"""Leakage between splits: identical files, near-duplicate radiographs and patients on both sides.

Every file is read once: the SHA-256 of its bytes finds identical files, and a 64-bit perceptual
hash (pHash, `imagehash`) of a small grayscale copy finds the same radiograph re-encoded, resized,
slightly cropped or with changed contrast. Two distinct files are near-duplicates when their hashes
differ in at most `NEAR_DISTANCE` of 64 bits (why that number: the README's *Leakage* section and
`benchmarks/bench_leakage.py`, which measures it on real radiographs). The copy is also hashed
mirrored and turned (`TURNS`: the seven flips and quarter turns), so an augmented copy saved as a file
(flipped left-right, rotated by 90 degrees) is a near-duplicate too, of kind "turned".

Nothing compares all pairs of files, so a dataset of many identical files costs time and memory in
proportion to its files: files of the same bytes are one content (decoded once), contents of the same
picture (equal pHashes as they are, flipped and turned) are one picture, and the near-duplicate search
runs over distinct pictures by multi-index hashing: it splits each hash into four 16-bit bands; two
hashes within distance ``d`` agree within ``d // 4`` bits on at least one band (pigeonhole), so only
hashes that nearly share a band are compared, `BLOCK` candidate pairs at a time. Counts and groups are
taken over contents and pictures, and each leaking file is listed once per pair of splits, against one
copy, so the list grows with the files too.

`find_leakage` gives a `LeakageReport`: per pair of splits the identical files, near-duplicates and
shared patients (`summary_lines` prints them, as `python -m mura_core index` does), the cross-split
pairs (for a CSV), and groups of rows that must stay on one side of any split (`leak_free_split`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import combinations

import numpy as np
import pandas as pd

from ..csvsafe import write_csv

NEAR_DISTANCE = 6
"""Largest Hamming distance (of 64 bits) between the pHashes of two near-duplicate files."""

HASH_SIDE = 64
"""Longest side (px) of the grayscale copy a file is hashed from (JPEGs decode at reduced size)."""

PAIR_COLUMNS = ("split_a", "path_a", "split_b", "path_b", "kind", "distance")
"""Columns of `LeakageReport.pairs` and of the `--duplicates` CSV."""

TURNS = ("FLIP_LEFT_RIGHT", "FLIP_TOP_BOTTOM", "ROTATE_90", "ROTATE_180", "ROTATE_270", "TRANSPOSE", "TRANSVERSE")
"""The seven flips and quarter turns (`PIL.Image.Transpose`) a picture is also hashed in."""

BLOCK = 1 << 20
"""Candidate pairs (near-duplicate search) or distances (memory baseline) computed at a time: memory stays
within a few tens of MB however many files share a hash."""

_BANDS = 4
_BAND_BITS = 16


@dataclass
class LeakageReport:
    """What `find_leakage` found in an index table.

    Attributes:
        files: one row per image of the table (same order): ``path``, ``split``, ``patient``,
            ``sha256`` ('' when unreadable), ``phash`` (the 64-bit hash as an int, None when undecodable),
            ``content`` (files with identical bytes share it), ``group`` (rows to keep on one side:
            identical or near-identical files, and a patient's files, joined transitively), ``error``.
        summary: one row per pair of splits (``split_a``, ``split_b``, in `split_order`):
            ``identical`` (files of split_a whose bytes are in split_b), ``near`` (other files of split_a
            with a near-duplicate in split_b), ``patients`` (patients with files in both).
        within: one row per split: ``identical`` (files with an identical copy in the same split),
            ``near`` (others with a near-duplicate there).
        pairs: for each pair of splits, each file of split_a that ``summary`` counts, once, against one
            file of split_b: an identical copy (``kind`` "identical", distance 0), else its nearest
            near-duplicate (``kind`` "near", the hashes' Hamming distance; "turned" when the pictures match
            only after a flip or quarter turn, the smallest distance over `TURNS`); of several such files
            the first by path. So its rows per pair of splits are ``summary``'s identical + near; columns
            `PAIR_COLUMNS`.
        max_distance: the near-duplicate threshold used.
    """

    files: pd.DataFrame
    summary: pd.DataFrame
    within: pd.DataFrame
    pairs: pd.DataFrame
    max_distance: int

    @property
    def has_patients(self) -> bool:
        """Whether the data records patients (then `summary`'s ``patients`` column means something)."""
        return bool((self.files["patient"] != "").any())

    @property
    def distinct(self) -> int:
        """How many distinct file contents (by bytes) the table holds."""
        return int(self.files.loc[self.files["sha256"] != "", "sha256"].nunique()
                   + (self.files["sha256"] == "").sum())


# ------------------------------------------------------------------------------------ fingerprints


def _phash(picture) -> int:
    import imagehash

    return int.from_bytes(np.packbits(imagehash.phash(picture).hash.reshape(-1)).tobytes(), "big")


def fingerprint_file(
    path: str | os.PathLike, known: dict[str, tuple] | None = None
) -> tuple[str, int | None, tuple[int, ...] | None, str]:
    """The SHA-256 of a file's bytes and the pHashes of its picture, reading the file once.

    Args:
        path: an image file of any type `imaging` decodes.
        known: optionally, what earlier files gave (``(phash, turned, error)`` by the SHA-256 of their
            bytes and of their small grayscale copy's pixels, filled in here): a file whose bytes were seen
            before is not decoded again, one whose picture was seen is not hashed again.

    Returns:
        ``(sha256 hex, phash, turned, error)``: phash is the 64-bit hash as an int and turned the hashes
        of the picture flipped and turned (one per `TURNS`), both None when the picture could not be
        decoded; sha256 is '' when the file could not be read; error says why, else ''.
    """
    from PIL import Image

    from ..imaging import ImageLoadError, load_image, thumbnail

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return "", None, None, f"cannot read the file: {exc.strerror or exc}"
    digest = hashlib.sha256(data).hexdigest()
    if known is not None and digest in known:
        return (digest, *known[digest])
    small = thumbnail(data, HASH_SIDE)
    if small is None or small.size == 0:
        try:
            load_image(data, str(path))  # only to say why it cannot be decoded
        except ImageLoadError as exc:
            found = None, None, exc.reason
        else:
            found = None, None, "cannot decode the image"
    else:
        pixels = "pixels:" + hashlib.sha256(small.tobytes() + str(small.shape).encode()).hexdigest()
        found = known.get(pixels) if known is not None else None
        if found is None:
            picture = Image.fromarray(small)
            turned = tuple(_phash(picture.transpose(getattr(Image.Transpose, turn))) for turn in TURNS)
            found = _phash(picture), turned, ""
        if known is not None:
            known[pixels] = found
    if known is not None:
        known[digest] = found
    return (digest, *found)


def fingerprints(
    paths: Sequence[str], workers: int = 2, progress: Callable[[int, int], None] | None = None
) -> pd.DataFrame:
    """`fingerprint_file` for many files, in threads (hashing and JPEG decoding release the GIL); files
    with the same bytes are decoded once, files with the same picture hashed once.

    Args:
        paths: the files.
        workers: threads to use.
        progress: called as ``progress(done, total)`` every 500 files and at the end.

    Returns:
        A table with ``path``, ``sha256``, ``phash``, ``turned``, ``error``, in the order of ``paths``.
    """
    results, known = [], {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, result in enumerate(pool.map(partial(fingerprint_file, known=known), paths), start=1):
            results.append(result)
            if progress and (done % 500 == 0 or done == len(paths)):
                progress(done, len(paths))
    sha, phash, turned, error = zip(*results) if results else ((), (), (), ())
    return pd.DataFrame({"path": list(paths), "sha256": list(sha), "phash": pd.Series(phash, dtype=object),
                         "turned": pd.Series(turned, dtype=object), "error": list(error)})


# ------------------------------------------------------------------------------------- near search


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    flat = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    return np.unpackbits(flat.view(np.uint8)).reshape(len(flat), -1).sum(axis=1).reshape(np.shape(values))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distances between two arrays of 64-bit hashes (uint64 or int)."""
    return _popcount(np.bitwise_xor(np.asarray(a).astype(np.uint64), np.asarray(b).astype(np.uint64)))


def _turned_array(hashes: Sequence[int] | np.ndarray, turned: Sequence) -> np.ndarray:
    """The flipped and turned hashes of each picture, shape (n, len(TURNS)); a picture without them
    (fingerprints from elsewhere) repeats its own hash, so it is compared as it is."""
    return np.array([[int(t) for t in turns] if isinstance(turns, (tuple, list)) else [int(h)] * len(TURNS)
                     for h, turns in zip(hashes, turned)], dtype=np.uint64).reshape(len(hashes), len(TURNS))


def turned_distance(hash_a, turned_a, hash_b, turned_b) -> np.ndarray:
    """The finder's distance between pictures a and b, pair by pair: the smallest Hamming distance of a
    and b as they are, a flipped or turned against b, and b flipped or turned against a.

    Args:
        hash_a, hash_b: 64-bit hashes, shape (n,) (or scalars).
        turned_a, turned_b: their flipped and turned hashes, shape (n, k) (or (k,)).
    """
    hash_a, hash_b = np.asarray(hash_a, np.uint64), np.asarray(hash_b, np.uint64)
    return np.minimum(hamming(hash_a, hash_b),
                      np.minimum(hamming(turned_a, hash_b[..., None]).min(axis=-1),
                                 hamming(turned_b, hash_a[..., None]).min(axis=-1)))


def _as_hashes(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    if isinstance(hashes, np.ndarray):
        return hashes.astype(np.uint64)
    return np.asarray([int(x) for x in hashes], dtype=np.uint64)


def _band_candidates(queries: np.ndarray, hashes: np.ndarray, radius: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Positions (q, j), in blocks of at most `BLOCK` pairs: query q and hash j agree within `radius` bits on
    at least one 16-bit band. A pair may come more than once (on several bands)."""
    table = np.arange(1 << _BAND_BITS, dtype=np.uint64)
    masks = table[_popcount(table) <= radius].astype(np.int64)
    for band in range(_BANDS):
        shift = np.uint64(band * _BAND_BITS)
        values = ((hashes >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        asked = ((queries >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        for mask in masks:
            wanted = asked ^ mask
            lo = np.searchsorted(ordered, wanted, "left")
            counts = np.searchsorted(ordered, wanted, "right") - lo
            hit = np.nonzero(counts)[0]
            if not len(hit):
                continue
            # query hit[k] meets order[lo[k]:lo[k] + counts[k]]; those runs laid end to end, cut in blocks
            lo, runs = lo[hit], counts[hit]
            starts = np.cumsum(runs) - runs
            total = int(starts[-1] + runs[-1])
            for first in range(0, total, BLOCK):
                at = np.arange(first, min(first + BLOCK, total))
                k = np.searchsorted(starts, at, "right") - 1
                yield hit[k], order[lo[k] + at - starts[k]]


def near_pairs(
    hashes: Sequence[int] | np.ndarray, max_distance: int, turned: np.ndarray | None = None
) -> pd.DataFrame:
    """All pairs of hashes within `max_distance` bits, by multi-index hashing (not all pairs), comparing
    at most `BLOCK` candidate pairs at a time.

    Args:
        hashes: 64-bit hashes (ints below 2**64, or uint64).
        max_distance: the largest Hamming distance reported, 0 to 63.
        turned: optionally, the hashes of each picture flipped and turned, shape (len(hashes), k); then
            two pictures are also near when one of them, turned, is within `max_distance` of the other.

    Returns:
        A table with ``i``, ``j`` (positions in ``hashes``, i < j), ``distance`` (the smallest, with or
        without a turn) and ``turned`` (True when only a turn brings them within `max_distance`).
    """
    h = _as_hashes(hashes)
    n = len(h)
    radius = max_distance // _BANDS
    found: list[np.ndarray] = []
    since = [0]  # pairs kept since the last merge

    def keep(i: np.ndarray, j: np.ndarray, distance: np.ndarray) -> None:
        close = (distance <= max_distance) & (i != j)
        low, high = np.minimum(i, j)[close], np.maximum(i, j)[close]
        found.append(low * n + high)
        since[0] += len(low)
        if since[0] > BLOCK:  # the same pair met on several bands is kept once
            found[:], since[0] = [np.unique(np.concatenate(found))], 0

    if n >= 2:
        for q, j in _band_candidates(h, h, radius):
            keep(q, j, hamming(h[q], h[j]))
        if turned is not None:
            turned = np.asarray(turned, dtype=np.uint64).reshape(n, -1)
            flat = turned.reshape(-1)
            for tq, tj in _band_candidates(flat, h, radius):
                keep(tq // turned.shape[1], tj, hamming(flat[tq], h[tj]))
    keys = np.unique(np.concatenate(found)) if found else np.array([], np.int64)
    i, j = keys // max(n, 1), keys % max(n, 1)
    plain = hamming(h[i], h[j])
    distance = plain.copy()
    if turned is not None:
        for first in range(0, len(i), BLOCK):
            part = slice(first, first + BLOCK)
            distance[part] = turned_distance(h[i[part]], turned[i[part]], h[j[part]], turned[j[part]])
    by_turn = plain > max_distance
    return pd.DataFrame({"i": i.astype(int), "j": j.astype(int), "distance": distance.astype(int),
                         "turned": by_turn})


# ------------------------------------------------------------------------------------------ report


_SPLIT_RANK = {"test": 0, "valid": 1, "val": 1, "validation": 1, "train": 3}


def split_order(splits: Sequence[str], sizes: dict[str, int]) -> list[str]:
    """The order pairs of splits are reported in (``test vs train``): test, then validation, then other
    splits, train last; splits of the same rank smallest first, then by name."""
    return sorted(splits, key=lambda s: (_SPLIT_RANK.get(s.lower(), 2), sizes.get(s, 0), s))


def find_leakage(
    table: pd.DataFrame,
    max_distance: int = NEAR_DISTANCE,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    prints: pd.DataFrame | None = None,
) -> LeakageReport:
    """Find identical files, near-duplicates and shared patients between the splits of an index.

    Args:
        table: an index table (`COLUMNS`: ``path``, ``split``, ``patient`` are used).
        max_distance: the near-duplicate threshold (Hamming distance of the 64-bit pHashes).
        workers: threads for reading and hashing the files.
        progress: called as ``progress(done, total)`` while files are hashed.
        prints: fingerprints already computed for these paths (`fingerprints`, or a report's ``files``),
            to skip hashing; without a ``turned`` column, flips and turns are not looked for.

    Returns:
        The `LeakageReport`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    paths = table["path"].astype(str).tolist()
    if prints is None:
        prints = fingerprints(paths, workers, progress)
    prints = prints.drop_duplicates("path").set_index("path").reindex(paths)
    files = pd.DataFrame({
        "path": paths,
        "split": table["split"].fillna("").astype(str).to_numpy(),
        "patient": table["patient"].fillna("").astype(str).to_numpy(),
        "sha256": prints["sha256"].fillna("").to_numpy(),
        "phash": prints["phash"].astype(object).where(prints["phash"].notna(), None).to_numpy(),
        "turned": (prints["turned"] if "turned" in prints else pd.Series(None, prints.index, object)).to_numpy(),
        "error": prints["error"].fillna("").to_numpy(),
    })
    # One content per distinct byte string (an unreadable file is its own content).
    keys = files["sha256"].where(files["sha256"] != "", "unread:" + files["path"])
    files["content"] = pd.factorize(keys)[0]
    n_content = int(files["content"].max()) + 1 if len(files) else 0

    # Pictures: contents whose pHashes (as they are, flipped and turned) are all equal are 0 apart and alike
    # to every other, so the near-duplicate search runs over distinct pictures, however many files share one.
    first = files.drop_duplicates("content").set_index("content").sort_index()
    hashed = first.index[first["phash"].notna()].to_numpy()
    own = np.array([int(v) for v in first.loc[hashed, "phash"]], dtype=np.uint64)
    pictures, picture_of = np.unique(np.column_stack([own, _turned_array(own, first.loc[hashed, "turned"])]),
                                     axis=0, return_inverse=True)
    picture = np.full(n_content, -1)
    picture[hashed] = picture_of.reshape(-1)
    n_pictures = len(pictures)
    near = near_pairs(pictures[:, 0], max_distance, pictures[:, 1:])

    # Groups: contents joined through their pictures, pictures by near-duplicate pairs, contents by patients
    # (nodes: contents, then pictures, then patients); edges grow with the files, not with pairs of them.
    patients = files["patient"].where(files["patient"] != "")
    patient_codes, _ = pd.factorize(patients)
    with_patient = patient_codes >= 0
    content = files["content"].to_numpy()
    rows = np.concatenate([hashed, n_content + near["i"].to_numpy(), content[with_patient]])
    cols = np.concatenate([n_content + picture[hashed], n_content + near["j"].to_numpy(),
                           n_content + n_pictures + patient_codes[with_patient]])
    n_nodes = n_content + n_pictures + int(patient_codes.max(initial=-1)) + 1
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    files["group"] = labels[content]

    # Per content and split: its files there (counts), and whether another content near it lies there
    # (near_in): one of the same picture, or of a near picture.
    sizes = files["split"].value_counts().to_dict()
    splits = split_order([s for s in sizes if s], sizes)
    codes = files["split"].map({split: k for k, split in enumerate(splits)}).fillna(-1).astype(int).to_numpy()
    counts = np.zeros((n_content, len(splits)), np.int64)
    np.add.at(counts, (content[codes >= 0], codes[codes >= 0]), 1)
    present = counts > 0
    at_picture = np.zeros((n_pictures, len(splits)), np.int64)
    np.add.at(at_picture, picture[hashed], present[hashed].astype(np.int64))
    link = coo_matrix((np.ones(2 * len(near)), (np.concatenate([near["i"], near["j"]]),
                                                 np.concatenate([near["j"], near["i"]]))),
                      shape=(n_pictures, n_pictures)).tocsr()
    beside = np.asarray(link @ (at_picture > 0).astype(np.int64)) > 0
    near_in = np.zeros_like(present)
    near_in[hashed] = (at_picture[picture[hashed]] - present[hashed] > 0) | beside[picture[hashed]]

    summary_rows = []
    for ka, kb in combinations(range(len(splits)), 2):
        of_a = content[codes == ka]
        same = present[of_a, kb]
        close = ~same & near_in[of_a, kb]
        shared = set(files.loc[codes == ka, "patient"]) & set(files.loc[codes == kb, "patient"]) - {""}
        summary_rows.append({"split_a": splits[ka], "split_b": splits[kb], "identical": int(same.sum()),
                             "near": int(close.sum()), "patients": len(shared)})
    within_rows = []
    for ks, split in enumerate(splits):
        of_s = content[codes == ks]
        same = counts[of_s, ks] > 1
        close = ~same & near_in[of_s, ks]
        within_rows.append({"split": split, "files": len(of_s), "identical": int(same.sum()),
                            "near": int(close.sum())})
    return LeakageReport(
        files=files,
        summary=pd.DataFrame(summary_rows, columns=["split_a", "split_b", "identical", "near", "patients"]),
        within=pd.DataFrame(within_rows, columns=["split", "files", "identical", "near"]),
        pairs=_listed_pairs(files, codes, picture, n_pictures, near, present, near_in, splits),
        max_distance=max_distance,
    )


def _listed_pairs(files: pd.DataFrame, codes: np.ndarray, picture: np.ndarray, n_pictures: int,
                  near: pd.DataFrame, present: np.ndarray, near_in: np.ndarray, splits: list[str]) -> pd.DataFrame:
    """`LeakageReport.pairs`: per pair of splits, each file of the first that `summary` counts, against its
    identical copy in the second, else its nearest near-duplicate there; of several such files, the first by
    path. One row per file and pair of splits, so the list grows with the files, never with pairs of them."""
    frame = pd.DataFrame({"path": files["path"].to_numpy(), "split": codes, "content": files["content"].to_numpy(),
                          "picture": picture[files["content"].to_numpy()]})
    by_path = frame[frame["split"] >= 0].sort_values("path", kind="stable")
    first_copy = by_path.drop_duplicates(["content", "split"])
    first_picture = by_path[by_path["picture"] >= 0].drop_duplicates(["picture", "split"])
    # a picture's links: to itself (another content of the same picture, 0 apart) and to its near pictures
    itself = np.arange(n_pictures)
    links = pd.DataFrame({
        "picture": np.concatenate([itself, near["i"], near["j"]]),
        "other": np.concatenate([itself, near["j"], near["i"]]),
        "distance": np.concatenate([np.zeros(len(itself), int), near["distance"], near["distance"]]),
        "kind": np.concatenate([np.full(len(itself), "near"), *[np.where(near["turned"], "turned", "near")] * 2]),
    })
    listed = []
    for ka, kb in combinations(range(len(splits)), 2):
        in_a = frame[frame["split"] == ka]
        same = present[in_a["content"], kb]
        close = ~same & near_in[in_a["content"], kb]
        copies = in_a[same].merge(first_copy.loc[first_copy["split"] == kb, ["content", "path"]], on="content",
                                  suffixes=("_a", "_b")).assign(kind="identical", distance=0)
        there = first_picture.loc[first_picture["split"] == kb, ["picture", "path"]].rename(
            columns={"picture": "other"})
        nearest = links.merge(there, on="other").sort_values(["picture", "distance", "path"], kind="stable") \
            .drop_duplicates("picture")
        alike = in_a[close].merge(nearest[["picture", "path", "kind", "distance"]], on="picture",
                                  suffixes=("_a", "_b"))
        listed += [part.assign(split_a=splits[ka], split_b=splits[kb]) for part in (copies, alike)]
    if not listed:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    pairs = pd.concat(listed, ignore_index=True).loc[:, list(PAIR_COLUMNS)].astype({"distance": int})
    return pairs.sort_values(["split_a", "split_b", "kind", "path_a", "path_b"], ignore_index=True)


def summary_lines(report: LeakageReport) -> list[str]:
    """One line per pair of splits (``test vs train: 491 identical files, 3 near-duplicates``), with
    shared patients where the data has patients, then one line per split for copies inside it."""
    lines = []
    for row in report.summary.itertuples():
        line = f"{row.split_a} vs {row.split_b}: {row.identical:,} identical files, {row.near:,} near-duplicates"
        if report.has_patients:
            line += f", {row.patients:,} patients on both sides"
        lines.append(line)
    for row in report.within.itertuples():
        lines.append(f"within {row.split}: {row.identical:,} of {row.files:,} files have an identical copy, "
                     f"{row.near:,} more a near-duplicate")
    unreadable = int((report.files["error"] != "").sum())
    if unreadable:
        lines.append(f"{unreadable:,} files could not be decoded: compared by their bytes only")
    total = len(report.files)
    lines.append(f"{report.distinct:,} distinct files of {total:,}; near-duplicate: pHash distance "
                 f"<= {report.max_distance} of 64 bits, also after a flip or a quarter turn")
    return lines


def example_pairs(report: LeakageReport, n: int = 4) -> pd.DataFrame:
    """A few cross-split pairs to look at: near-duplicates first (the farthest apart, to show what the
    threshold still calls the same radiograph), then identical files.

    Args:
        report: `find_leakage`'s report.
        n: how many pairs at most.

    Returns:
        Up to ``n`` rows of ``report.pairs``.
    """
    near = report.pairs[report.pairs["kind"] != "identical"].sort_values("distance", ascending=False, kind="stable")
    same = report.pairs[report.pairs["kind"] == "identical"].drop_duplicates("path_a")
    near = near.head(max(n // 2, n - len(same)))
    return pd.concat([near, same.head(n - len(near))], ignore_index=True)


def leak_free_split(
    table: pd.DataFrame,
    report: LeakageReport,
    fractions: dict[str, float],
    seed: int = 0,
) -> pd.DataFrame:
    """Reassign splits so that no group of identical or near-identical files (or patient) straddles two.

    Groups (``report.files["group"]``) are dealt out by ``StratifiedGroupKFold`` on each group's
    majority label, so each split keeps about its share of images and of positives.

    Args:
        table: the index table `report` was computed from (same rows, same order).
        report: `find_leakage`'s report on it.
        fractions: the new splits and their shares, e.g. ``{"train": 0.8, "val": 0.1, "test": 0.1}``
            (normalised to sum 1); the first is the one left over.
        seed: the random state; the same seed gives the same split.

    Returns:
        A copy of ``table`` with the ``split`` column reassigned.

    Raises:
        ValueError: if the rows do not match the report, a share is not positive or there are too few
            groups.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if len(table) != len(report.files) or (table["path"].astype(str).to_numpy()
                                            != report.files["path"].to_numpy()).any():
        raise ValueError("the table's rows are not the ones the leakage report was computed from")
    if not fractions or min(fractions.values()) <= 0:
        raise ValueError(f"every split needs a positive share, got {fractions}")
    total = sum(fractions.values())
    names = list(fractions)
    groups = report.files["group"].to_numpy()
    labels = table["label"].to_numpy()
    split = np.full(len(table), names[0], dtype=object)
    remaining = np.arange(len(table))
    left = 1.0
    for name in names[1:]:
        share = fractions[name] / total / left  # of what is still unassigned
        n_splits = max(2, round(1 / share))
        if len(set(groups[remaining])) < n_splits:
            raise ValueError(f"{len(set(groups[remaining]))} groups cannot be split into {n_splits} folds")
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, held = next(folds.split(np.zeros(len(remaining)), labels[remaining], groups[remaining]))
        split[remaining[held]] = name
        remaining = np.setdiff1d(remaining, remaining[held])
        left -= fractions[name] / total
    out = table.copy()
    out["split"] = split
    return out


# ----------------------------------------------------------------------------------- memory baseline


MEMORY_BANDS = ((0, 0), (1, NEAR_DISTANCE), (NEAR_DISTANCE + 1, 10), (11, 16), (17, 64))
"""Bands of distance to the nearest training picture that `memory_by_distance` reports."""


def memory_scores(test_hashes: np.ndarray, train_hashes: np.ndarray, train_labels: np.ndarray,
                  chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label each test picture like its most alike training picture: no model, only memory.

    Equal hashes are compared once (training hashes counted per label, test pictures by their hashes), so
    time and memory grow with the distinct pictures, however many files share one.

    Args:
        test_hashes: uint64 pHashes, shape (test, k): each picture as it is, then flipped and turned
            (the distance is the smallest of the k); shape (test,) for the picture as it is only.
        train_hashes: uint64 pHashes, shape (train,).
        train_labels: 0 (normal) or 1 (abnormal) per training hash; both labels must occur.
        chunk: distinct test pictures compared at a time; by default as many as keep a block of distances
            within `BLOCK` (about 8 MB).

    Returns:
        ``(scores, nearest)``: each score is ``0.5 + (d_normal - d_abnormal) / 128`` for the distances to
        the nearest normal and abnormal training picture (above 0.5: an abnormal one is nearer), a tie
        moved by ``(share_abnormal - 0.5) / 128`` for the abnormal share of the training pictures at that
        distance; nearest is the distance to the nearest training picture.
    """
    labels = np.asarray(train_labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("the training split needs both normal and abnormal images")
    test_hashes = np.asarray(test_hashes, np.uint64).reshape(len(test_hashes), -1)
    if not len(test_hashes):
        return np.zeros(0), np.zeros(0, np.int64)
    train_hashes, where = np.unique(np.asarray(train_hashes, np.uint64), return_inverse=True)
    abnormal = np.bincount(where.reshape(-1), weights=labels, minlength=len(train_hashes))
    pictures = np.bincount(where.reshape(-1), minlength=len(train_hashes)).astype(float)
    has_abnormal, has_normal = abnormal > 0, pictures > abnormal
    tests, back = np.unique(test_hashes, axis=0, return_inverse=True)
    chunk = chunk or max(1, BLOCK // len(train_hashes))
    scores, nearest = [], []
    for start in range(0, len(tests), chunk):
        block = tests[start:start + chunk]
        distances = hamming(block[:, :1], train_hashes[None, :])
        for k in range(1, block.shape[1]):  # one variant at a time: memory stays chunk x train
            np.minimum(distances, hamming(block[:, k:k + 1], train_hashes[None, :]), out=distances)
        d_abnormal, d_normal = distances[:, has_abnormal].min(axis=1), distances[:, has_normal].min(axis=1)
        score = 0.5 + (d_normal - d_abnormal) / 128.0
        tied = d_normal == d_abnormal
        if tied.any():
            at_min = distances[tied] == d_normal[tied, None]
            score[tied] += ((at_min @ abnormal) / (at_min @ pictures) - 0.5) / 128.0
        scores.append(score)
        nearest.append(np.minimum(d_normal, d_abnormal))
    back = back.reshape(-1)
    return np.concatenate(scores)[back], np.concatenate(nearest)[back]


def memory_baseline(report: LeakageReport, labels, test_split: str = "test",
                    train_split: str = "train") -> pd.DataFrame:
    """The memory baseline of one split against another: each decodable file of ``test_split`` labelled
    like its most alike picture of ``train_split`` (`memory_scores`, with flips and turns).

    What it scores measures how much of the split a model can pass by memory: near 1 on a split that
    leaks, near chance where train and test share nothing alike.

    Args:
        report: `find_leakage`'s report.
        labels: 0/1 per row of ``report.files`` (the index table's ``label`` column).
        test_split, train_split: the split scored and the split remembered.

    Returns:
        One row per decodable file of ``test_split``: ``path``, ``label``, ``score``, ``nearest`` (distance
        to the nearest training picture) and ``identical`` (its bytes are in the training split).

    Raises:
        ValueError: if a split has no decodable file, or the training split lacks a label.
    """
    files = report.files.assign(label=np.asarray(labels).astype(int))
    decoded = files["phash"].notna()
    train, test = (files[decoded & (files["split"] == name)] for name in (train_split, test_split))
    if train.empty or test.empty:
        raise ValueError(f"no decodable files in split {train_split!r} or {test_split!r}")
    own = np.array([int(h) for h in test["phash"]], np.uint64)
    test_hashes = np.column_stack([own, _turned_array(own, test["turned"])])
    scores, nearest = memory_scores(test_hashes, np.array([int(h) for h in train["phash"]], np.uint64),
                                    train["label"].to_numpy())
    return pd.DataFrame({"path": test["path"].to_numpy(), "label": test["label"].to_numpy(), "score": scores,
                         "nearest": nearest, "identical": test["content"].isin(train["content"]).to_numpy()})


def memory_by_distance(rows: pd.DataFrame) -> list[dict]:
    """`memory_baseline`'s accuracy per band of distance to the nearest training picture (`MEMORY_BANDS`).
    Where it stays high beyond the near-duplicate threshold, the test still holds altered copies."""
    out = []
    for low, high in MEMORY_BANDS:
        inside = rows[rows["nearest"].between(low, high)]
        correct = (inside["score"] >= 0.5) == inside["label"].astype(bool)
        out.append({"distance": f"{low}-{high}", "images": len(inside),
                    "accuracy": float(correct.mean()) if len(inside) else None})
    return out


def memory_summary(report: LeakageReport, labels) -> pd.DataFrame:
    """`memory_baseline` of every other split against the last one of `split_order` (train): one row each
    with ``split``, ``against``, ``images``, ``accuracy`` and ``auc`` (None with one class)."""
    from ..metrics import binary_metrics

    if report.summary.empty:
        return pd.DataFrame(columns=["split", "against", "images", "accuracy", "auc"])
    remembered = report.summary["split_b"].iloc[-1]
    out = []
    for split in report.summary.loc[report.summary["split_b"] == remembered, "split_a"]:
        try:
            rows = memory_baseline(report, labels, split, remembered)
        except ValueError:
            continue
        scores = binary_metrics(rows["label"].to_numpy(), rows["score"].to_numpy(), threshold=0.5)
        out.append({"split": split, "against": remembered, "images": len(rows), "accuracy": scores["accuracy"],
                    "auc": scores["auc"]})
    return pd.DataFrame(out, columns=["split", "against", "images", "accuracy", "auc"])


def print_leakage(table: pd.DataFrame, duplicates: str | os.PathLike | None = None, workers: int = 2,
                  max_distance: int = NEAR_DISTANCE) -> LeakageReport:
    """Find the leakage in an index table, print `summary_lines` and the memory baseline
    (`memory_summary`), and write the cross-split pairs.

    What ``python -m mura_core index`` runs after indexing.

    Args:
        table: an index table.
        duplicates: a CSV file for `LeakageReport.pairs` (columns `PAIR_COLUMNS`), or None.
        workers: threads for reading and hashing the files.
        max_distance: the near-duplicate threshold.

    Returns:
        The report.
    """
    import sys

    progress = None
    if sys.stderr.isatty():
        def progress(done: int, total: int) -> None:
            print(f"\rhashing {done}/{total} files", end="\n" if done == total else "", file=sys.stderr)
    report = find_leakage(table, max_distance, workers, progress)
    print("leakage between splits:")
    for line in summary_lines(report):
        print("  " + line)
    if "label" in table and table["label"].notna().all():
        for row in memory_summary(report, table["label"]).itertuples():
            auc = "n/a" if row.auc is None or pd.isna(row.auc) else f"{row.auc:.3f}"
            print(f"  memory baseline, {row.split} vs {row.against}: accuracy {row.accuracy:.3f}, AUC {auc} "
                  f"(each image labelled like its most alike {row.against} picture, no model)")
    if duplicates is not None:
        write_csv(report.pairs, duplicates)
        print(f"  {len(report.pairs):,} cross-split pairs (each leaking file once, against one copy) -> {duplicates}")
    return report
