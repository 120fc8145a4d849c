"""An ensemble of members (mean of probabilities), its manifest on disk, and study prediction.

Each member runs on ONNX Runtime (`onnx_runtime.OnnxMember`) where the manifest lists its ONNX graph, and
on Keras otherwise (older manifests, a user's own weights); `MURA_RUNTIME` or `load_ensemble(runtime=...)`
forces either. Loading and predicting through ONNX imports neither Keras nor TensorFlow: they load the
first time a member's Keras model is needed (a heatmap method that needs real gradients, `members`, `save`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .body_parts import detect_body_part
from .coverage import Coverage, colour_warning
from .decision import DEFAULT_THRESHOLD, ensemble_probability, member_probability, study_probability, verdict
from .heatmaps import FUSION_RULES, fuse_heatmaps, peak_value, resize_heatmap, unweight_lesion_map
from .imaging import ImageLoadError, ImageSource, load_image_info, resize_square, source_name
from .installed import (  # noqa: F401  (re-exported: the public API keeps these names here)
    DEFAULT_WEIGHTS,
    MANIFEST,
    MANIFEST_FORMAT,
    EnsembleLoadError,
    read_manifest,
    sha256_file,
    weights_folder,
    weights_installed,
)
from .notices import DISCLAIMER  # noqa: F401  (re-exported)
from .onnx_runtime import OnnxMember, onnxruntime_available, runtime_setting
from .regions import RegionSettings, box_field, find_regions, fuse_box_fields
from .results import ImageResult, Study, StudyResult  # noqa: F401  (re-exported)
from .test_time import Mirrored
from .vocabulary import CAM_METHODS, LESION_MAP

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


class Ensemble:
    """Members' probabilities averaged, with a decision threshold.

    Args:
        members: member name -> Keras model built by `create_model` (name = its architecture), or an
            `onnx_runtime.OnnxMember` (its Keras model loads when a method needs gradients).
        threshold: decision threshold on the ensemble probability.
        info: what to record in the manifest (training data, metrics, ...).
        architectures: member name -> registry name, when a model's `name` is not its architecture.
        jit_compile: compile prediction and Grad-CAM with XLA.
        heatmap_fusion: how the members' lesion maps are fused (`heatmaps.FUSION_RULES`; the manifest's
            "heatmap_fusion", "mean" when absent). Other heatmaps are always averaged.
        heatmap_layers: member name -> {"gradcam_layer", "map_layer", "map_stride", "map_positive_weight",
            "map_evidence"} as a manifest records them; what is missing comes from the model (its lesion map's
            stride) or the architecture's spec. "map_positive_weight", the weight of lesion cells in the
            member's training (1 when absent), turns its lesion map into a probability
            (`heatmaps.unweight_lesion_map`); "map_evidence" (0 when absent), the lesion map's say in the
            member's probability (`decision.member_probability`), so every reading runs the map.
        regions: how suspected regions are read off the fused default map, and the score of a finding (the
            manifest's "regions"; `RegionSettings()` when absent).
        test_time_flip: each member reads every image as it is and mirrored left-right, and its outputs are
            averaged (`test_time.Mirrored`; the manifest's "test_time_flip", False when absent).
    """

    def __init__(self, members: Mapping[str, keras.Model | OnnxMember], threshold: float = DEFAULT_THRESHOLD,
                 info: Mapping[str, Any] | None = None,
                 architectures: Mapping[str, str] | None = None, jit_compile: bool = False,
                 heatmap_layers: Mapping[str, Mapping[str, Any]] | None = None, heatmap_fusion: str = "mean",
                 regions: RegionSettings | None = None, test_time_flip: bool = False):
        if not members:
            raise ValueError("An ensemble needs at least one member")
        if heatmap_fusion not in FUSION_RULES:
            raise ValueError(f"unknown heatmap fusion {heatmap_fusion!r}; known: {', '.join(FUSION_RULES)}")
        self.heatmap_fusion = heatmap_fusion
        self.regions = regions or RegionSettings()
        self._members = dict(members)
        self.threshold = float(threshold)
        self.info = dict(info or {})
        self.architectures = {n: (architectures or {}).get(n, m.name) for n, m in self._members.items()}
        self.heatmap_layers = {}
        self._explainers = {}
        for name, arch in self.architectures.items():
            recorded = dict((heatmap_layers or {}).get(name) or {})
            member = self._members[name]
            if isinstance(member, OnnxMember):  # the manifest records every layer; the graph gives the stride
                self.heatmap_layers[name] = {"gradcam_layer": recorded.get("gradcam_layer") or member.layer_name,
                                             "map_layer": recorded.get("map_layer", ""),
                                             "map_stride": int(recorded.get("map_stride") or member.map_stride or 0),
                                             "map_positive_weight": _positive_weight(recorded, name),
                                             "map_evidence": _map_evidence(recorded, name, member)}
                self._explainers[name] = member
                continue
            from .gradcam import CamExplainer
            from .registry import get_spec

            spec = get_spec(arch)  # raises for an unknown architecture
            self.heatmap_layers[name] = {"gradcam_layer": recorded.get("gradcam_layer") or spec.gradcam_layer,
                                         "map_layer": recorded.get("map_layer") or spec.map_layer,
                                         "map_stride": _map_stride(recorded, member, arch),
                                         "map_positive_weight": _positive_weight(recorded, name)}
            self._explainers[name] = CamExplainer(member, self.heatmap_layers[name]["gradcam_layer"], jit_compile)
            self.heatmap_layers[name]["map_evidence"] = _map_evidence(recorded, name, self._explainers[name])
        without = [n for n, e in self._explainers.items() if not e.has_boxes]
        if self.regions.params.mode == "boxes" and without:
            raise ValueError(f"region mode 'boxes' reads the members' box heads, and {', '.join(without)} has none")
        self.test_time_flip = bool(test_time_flip)
        if self.test_time_flip:
            self._explainers = {name: Mirrored(e) for name, e in self._explainers.items()}
        self._lock = threading.Lock()  # one study at a time through the shared models

    @property
    def names(self) -> list[str]:
        return list(self._members)

    @property
    def members(self) -> dict[str, keras.Model]:
        """Member name -> Keras model; a member served by ONNX Runtime loads its Keras model here (once)."""
        return {name: m.keras_model() if isinstance(m, OnnxMember) else m for name, m in self._members.items()}

    @property
    def runtimes(self) -> dict[str, str]:
        """Member name -> the runtime of its forward pass: "onnx" (ONNX Runtime) or "keras"."""
        return {name: "onnx" if isinstance(m, OnnxMember) else "keras" for name, m in self._members.items()}

    def needs_loading(self, method: str) -> bool:
        """Whether heatmaps by `method` will first load a member's Keras model (and TensorFlow): a method
        needing gradients the ONNX graph does not give, asked for the first time. The Diagnose page says so."""
        return any(isinstance(m, OnnxMember) and m.needs_keras(method) and not m.keras_loaded
                   for m in self._members.values())

    def input_size(self, name: str) -> int:
        return self._explainers[name].input_size

    @property
    def coverage(self) -> Coverage | None:
        """What the members were trained on (`info["coverage"]`), or None when the manifest does not say."""
        return Coverage.from_info(self.info)

    def heatmap_layer(self, name: str, method: str) -> str:
        """The layer member `name`'s `method` heatmap reads (the lesion map's or Grad-CAM's)."""
        return self.heatmap_layers[name]["map_layer" if method == LESION_MAP else "gradcam_layer"]

    @property
    def default_cam_method(self) -> str:
        """The heatmap shown by default: the members' own lesion map when they all have one, else Grad-CAM."""
        return LESION_MAP if LESION_MAP in self.cam_methods else "gradcam"

    @property
    def cam_methods(self) -> list[str]:
        """Heatmap methods every member offers (`CAM_METHODS`; "lesion_map" when all have one)."""
        return [m for m in CAM_METHODS if all(m in e.methods for e in self._explainers.values())]

    def warm_up(self, explain: bool = True) -> None:
        """Run a one-image and a two-image study (the default heatmap method), so the compiled functions are
        traced and the buffers of the commonest batch shapes allocated before the first real study: it is
        fast, and a server's memory does not climb over its first sessions."""
        gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
        self.predict_study([gray], explain=explain)
        self.predict_study([gray, gray.T], explain=explain)

    def predict_arrays(self, grays: Sequence[np.ndarray], batch_size: int = 16) -> dict[str, np.ndarray]:
        """Each member's probabilities for decoded (H, W) uint8 images, batched per member."""
        out = {}
        with self._lock:
            for name, explainer in self._explainers.items():
                size = explainer.input_size
                probs = []
                for start in range(0, len(grays), batch_size):
                    batch = np.stack([resize_square(g, size) for g in grays[start:start + batch_size]])
                    probs.append(self._read(name, batch)[0])
                out[name] = np.concatenate(probs) if probs else np.zeros(0, np.float32)
        return out

    def decode(self, images: Sequence[ImageSource], names: Sequence[str] | None = None) -> list[ImageResult]:
        """Decode a study's sources, each once: the one place an input becomes pixels.

        Args:
            images: paths, bytes or arrays.
            names: display names (default: file names, or image1, image2, ...).

        Returns:
            One `ImageResult` per source, in order: its pixels, DICOM body part and colour warning
            (from what the decoder recorded), or its error.
        """
        results = []
        for i, source in enumerate(images):
            default = source_name(source) if isinstance(source, (str, os.PathLike)) else f"image{i + 1}"
            name = names[i] if names is not None else Path(default).name
            try:
                loaded = load_image_info(source, name)
            except ImageLoadError as exc:
                results.append(ImageResult(name=name, error=exc.reason))
                continue
            results.append(ImageResult(name=name, image=loaded.pixels, body_part=loaded.body_part,
                                       warning=colour_warning(loaded.colourfulness, name)))
        return results

    def predict_studies(self, studies: Iterable[Study], explain: bool = False, method: str | None = None,
                        batch_size: int = 16, regions: bool = True) -> Iterator[StudyResult]:
        """The one path from sources to results: decode, predict (batched across studies), explain, summarise.

        Args:
            studies: each study's sources, display names and body part (None: detect it).
            explain: also compute a heatmap per member and the fused ensemble heatmap.
            method: heatmap method when `explain` (`CAM_METHODS`); default `default_cam_method`.
            batch_size: images predicted together; studies are gathered until they hold this many.
            regions: when explaining with the default method, also read each image's suspected regions off
                its fused map (`regions.find_regions` with the manifest's settings).

        Yields:
            One `StudyResult` per study, in order (see `predict_study`).
        """
        method = self._resolve_method(explain, method)
        pending: list[tuple[Study, list[ImageResult]]] = []
        n_read = 0
        for study in studies:
            decoded = self.decode(study.images, study.names)
            pending.append((study, decoded))
            n_read += sum(r.ok for r in decoded)
            if n_read >= batch_size:
                yield from self._finish(pending, explain, method, batch_size, regions)
                pending, n_read = [], 0
        yield from self._finish(pending, explain, method, batch_size, regions)

    def predict_study(self, images: Sequence[ImageSource], explain: bool = False,
                      method: str | None = None, names: Sequence[str] | None = None,
                      body_part: str | None = None, regions: bool = True) -> StudyResult:
        """Predict one study (`predict_studies` with one study, its images in one batch).

        Args:
            images: the study's images as paths, bytes or arrays.
            explain: also compute a heatmap per member and the fused ensemble heatmap.
            method: heatmap method when `explain` (see `CAM_METHODS`); default `default_cam_method`
                (the lesion map when every member has one, as the dashboard shows).
            names: display names for the images (default: file names, or image1, image2, ...).
            body_part: the study's body part; by default detected from DICOM BodyPartExamined or
                MURA-style names (`XR_WRIST...`) in the paths, '' when not found.
            regions: with `explain` and the default method, also find each image's suspected regions.

        Returns:
            A `StudyResult`, with its `warning` when the body part is outside the ensemble's coverage
            (or unknown) or an image is in strong colour. An unreadable image gets its error in its
            `ImageResult`; the other images are still predicted.
        """
        study = Study(images, names, body_part)
        return next(self.predict_studies([study], explain, method, batch_size=max(1, len(images)), regions=regions))

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 16,
                      progress=None) -> pd.DataFrame:
        """Predict many files, each its own study, batched across files: one row per path.

        Args:
            paths: image files.
            batch_size: images predicted together.
            progress: optional callable(done, total).

        Returns:
            Columns `path`, one per member, `ensemble`, `body_part` (DICOM), `error` ("" when read) and
            `warning` (`coverage.colour_warning`, "" when none).
        """
        rows = []
        studies = (Study([path], [Path(path).name], "") for path in paths)
        for done, result in enumerate(self.predict_studies(studies, batch_size=batch_size), start=1):
            image = result.images[0]
            rows.append({"path": os.fspath(paths[done - 1]), **image.probabilities, "ensemble": image.ensemble,
                         "body_part": image.body_part, "error": image.error or "", "warning": image.warning})
            if progress is not None and (done % batch_size == 0 or done == len(paths)):
                progress(done, len(paths))
        columns = ["path", *self.names, "ensemble", "body_part", "error", "warning"]
        return pd.DataFrame(rows, columns=columns)

    def _resolve_method(self, explain: bool, method: str | None) -> str:
        method = method or self.default_cam_method
        if method not in CAM_METHODS:
            raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
        if explain and method not in self.cam_methods:
            raise ValueError(f"Heatmap method {method!r} is not offered by every member; "
                             f"choose one of {', '.join(self.cam_methods)}")
        return method

    def _finish(self, pending: list[tuple[Study, list[ImageResult]]], explain: bool, method: str,
                batch_size: int, regions: bool = True) -> Iterator[StudyResult]:
        ok = [r for _, decoded in pending for r in decoded if r.ok]
        for start in range(0, len(ok), batch_size):
            self._fill(ok[start:start + batch_size], explain, method)
        if explain and regions and method == self.default_cam_method:  # regions come from the default map only
            settings = self.regions.params
            for r in ok:
                r.regions = find_regions(r.heatmaps["ensemble"], r.image.shape, settings, r.ensemble, r.box_field)
        for study, decoded in pending:
            yield self._summarise(study, decoded, method if explain else None)

    def _fill(self, ok: list[ImageResult], explain: bool, method: str) -> None:
        lesions = method == LESION_MAP
        fields: list[list[np.ndarray]] = [[] for _ in ok]  # each image's box fields (members with a box head)
        with self._lock:
            for name, explainer in self._explainers.items():
                batch = np.stack([resize_square(r.image, explainer.input_size) for r in ok])
                probs, maps, codes = self._read(name, batch, method if explain else None)
                for found, image_codes in zip(fields, codes if codes is not None else ()):
                    found.append(box_field(image_codes))
                for r, p, heat in zip(ok, probs, maps if maps is not None else [None] * len(ok)):
                    r.probabilities[name] = float(p)
                    if heat is not None:
                        r.heatmaps[name] = heat
        rule = self.heatmap_fusion if lesions else "mean"
        weights = self._map_resolutions() if rule == "geometric_by_resolution" else None
        for r in ok:
            r.ensemble = ensemble_probability(r.probabilities[n] for n in self.names)
            if explain:
                side = max(heat.shape[0] for heat in r.heatmaps.values())  # the finest member map
                r.heatmaps["ensemble"] = fuse_heatmaps([resize_heatmap(r.heatmaps[n], (side, side))
                                                        for n in self.names], weights, normalize=not lesions,
                                                       rule=rule)
        for r, found in zip(ok, fields):
            r.box_field = fuse_box_fields(found)

    def _read(self, name: str, batch: np.ndarray, method: str | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Member `name`'s reading of a batch of raw images: its probabilities (`decision.member_probability`),
        its heatmaps by `method` (None: none; a lesion map read as a probability) and, with the lesion map, its
        box head's codes (None without one). The lesion map and the box codes come from the probability's
        pass; a member whose probability takes the map's evidence runs the map for every reading."""
        explainer, layers = self._explainers[name], self.heatmap_layers[name]
        evidence = layers.get("map_evidence", 0.0)
        maps = codes = None
        if method == LESION_MAP or evidence:
            probs, lesion_maps, lesion_codes = explainer.explain_lesions(batch)
            lesion_maps = unweight_lesion_map(lesion_maps, layers["map_positive_weight"])
            if evidence:
                probs = member_probability(probs, [peak_value(m) for m in lesion_maps], evidence)
            if method == LESION_MAP:
                maps, codes = lesion_maps, lesion_codes
        if method is not None and method != LESION_MAP:
            cam_probs, maps = explainer.explain(batch, method)
            probs = probs if evidence else cam_probs
        elif method is None and not evidence:
            probs = explainer.predict(batch)
        return np.asarray(probs, dtype=np.float32), maps, codes

    def _map_resolutions(self) -> list[float]:
        """Each member's lesion-map resolution, in cells per side (input size / map stride): the weights
        of the `geometric_by_resolution` fusion."""
        return [self.input_size(n) / self.heatmap_layers[n]["map_stride"] for n in self.names]

    def _summarise(self, study: Study, results: list[ImageResult], method: str | None) -> StudyResult:
        ok = [r for r in results if r.ok]
        body_part, source = study.body_part or "", ""
        if study.body_part is None:  # detected once, here: DICOM BodyPartExamined, else XR_ names in the paths
            where = [os.fspath(s) if isinstance(s, (str, os.PathLike)) else r.name
                     for s, r in zip(study.images, results)]
            body_part, source = detect_body_part(where, [r.body_part for r in ok])
        probability = study_probability(r.ensemble for r in ok)
        members = {n: study_probability(r.probabilities[n] for r in ok) for n in self.names} if ok else {}
        return StudyResult(results, self.names, self.threshold, probability, members,
                           verdict(probability, self.threshold), method, self.coverage, body_part, source,
                           self.regions.threshold if method == self.default_cam_method else None)

    def save(self, folder: str | os.PathLike, overwrite: bool = False, onnx: bool = False,
             keras_float16: bool = False) -> Path:
        """Write each member as `<name>.keras` and `manifest.json` into `folder`, atomically.

        The files are written to a temporary folder beside `folder` and moved in place at the end,
        so an interrupted save never leaves a half-written ensemble.

        Args:
            folder: the ensemble folder to write.
            overwrite: replace the members and manifest of a folder that is not empty.
            onnx: also write each member as `<name>.onnx` for ONNX Runtime (`onnx_export.write_onnx_member`:
                refused when its outputs on the bundled sample radiographs differ from Keras'), listed
                with its checksum and opset in the manifest.
            keras_float16: store the `.keras` weights in float16 (half the size; with ONNX graphs the
                Keras models serve gradients and training only).
        """
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise FileExistsError(f"{folder} is not empty; pass overwrite=True to replace it")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            entries = []
            for name, model in self.members.items():
                path = tmp / f"{name}.keras"
                model.save(path)
                _deflate(path)
                if keras_float16:
                    from .onnx_export import halve_keras_weights

                    halve_keras_weights(path)
                layers = self.heatmap_layers[name]
                entry = {"name": name, "architecture": self.architectures[name], "file": path.name,
                         "sha256": sha256_file(path), "input_size": self.input_size(name),
                         "gradcam_layer": layers["gradcam_layer"]}
                if self._explainers[name].has_lesion_map:
                    entry.update(map_layer=layers["map_layer"], map_stride=layers["map_stride"],
                                 map_positive_weight=layers["map_positive_weight"],
                                 map_evidence=layers["map_evidence"])
                if keras_float16:
                    entry["keras_float16"] = True
                if onnx:
                    from .onnx_export import write_onnx_member

                    entry["onnx"] = write_onnx_member(model, tmp / f"{name}.onnx", layers["gradcam_layer"])
                entries.append(entry)
            manifest = {"format": MANIFEST_FORMAT, "threshold": self.threshold,
                        "heatmap_fusion": self.heatmap_fusion, "test_time_flip": self.test_time_flip,
                        "members": entries,
                        "regions": self.regions.to_info(), "info": self.info}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if folder.exists():
                files = [e["file"] for e in entries] + [e["onnx"]["file"] for e in entries if e.get("onnx")]
                for old in [folder / f for f in files] + [folder / MANIFEST]:
                    old.unlink(missing_ok=True)
            folder.mkdir(exist_ok=True)
            for item in tmp.iterdir():
                os.replace(item, folder / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder


def _deflate(path: Path) -> None:
    """Re-pack a `.keras` archive with deflate (Keras stores it uncompressed): about 10% smaller."""
    packed = path.with_suffix(".deflate")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for item in source.infolist():
            out.writestr(item, source.read(item.filename), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(packed, path)


def load_ensemble(folder: str | os.PathLike | None = None, verify: bool = True,
                  jit_compile: bool = False, runtime: str | None = None) -> Ensemble:
    """Load an ensemble written by `Ensemble.save`.

    Each member file's sha256 is checked against the manifest before it is opened, models load
    with Keras `safe_mode=True` (no code from the file runs), and each member's architecture and
    input size must match the manifest. The heatmap layers and the lesion map's stride are read
    from the manifest (older manifests: from the architecture's spec), and a lesion map must have
    input size / stride cells a side.

    A member whose manifest entry lists an ONNX graph ("onnx": file, sha256, opset) runs on ONNX Runtime
    (unless the runtime is "keras"): its graph is checked and opened now, its Keras model (checked the
    same way) only when a heatmap method needs gradients.

    Args:
        folder: the ensemble folder; default `$MURA_WEIGHTS` or the repository's `weights/`.
        verify: check sha256 checksums.
        jit_compile: compile prediction and Grad-CAM with XLA (Keras members).
        runtime: "auto" (ONNX Runtime where the manifest lists a graph and onnxruntime is installed, else
            Keras), "onnx" (every member; an error when one has no graph) or "keras"; default
            `$MURA_RUNTIME`, else "auto" (`onnx_runtime.runtime_setting`).

    Raises:
        EnsembleLoadError: naming the file and what is wrong with it (or the runtime setting).
    """
    folder = weights_folder(folder)
    try:
        setting = runtime_setting(runtime)
    except ValueError as exc:
        raise EnsembleLoadError(str(exc)) from None
    manifest = read_manifest(folder)
    members, architectures, layers = {}, {}, {}
    for entry in manifest["members"]:
        try:
            name, arch, file = entry["name"], entry["architecture"], entry["file"]
            int(entry["input_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EnsembleLoadError(f"{folder / MANIFEST}: malformed member entry {entry!r} ({exc})") from None
        path = folder / file
        if Path(file).name != file:
            raise EnsembleLoadError(f"{path}: member files must lie in the ensemble folder")
        layers[name] = {k: entry[k] for k in ("gradcam_layer", "map_layer", "map_stride", "map_positive_weight",
                                              "map_evidence") if entry.get(k)}
        if setting == "onnx" or (setting == "auto" and entry.get("onnx") and onnxruntime_available()):
            members[name] = _onnx_member(folder, entry, verify)
        else:
            members[name] = load_keras_member(folder, entry, verify)
            if entry.get("keras_float16"):
                log.warning("%s: served by Keras from float16 weights, whose probabilities differ from the ONNX "
                            "graph's (and the evaluation's) by up to about 2e-3", folder / file)
        architectures[name] = arch
    fusion = manifest.get("heatmap_fusion", "mean")
    if fusion not in FUSION_RULES:
        raise EnsembleLoadError(f"{folder / MANIFEST}: unknown heatmap_fusion {fusion!r} "
                                f"(known: {', '.join(FUSION_RULES)})")
    try:
        regions = RegionSettings.from_manifest(manifest, str(folder / MANIFEST))
    except ValueError as exc:
        raise EnsembleLoadError(str(exc)) from None
    flip = manifest.get("test_time_flip", False)
    if not isinstance(flip, bool):
        raise EnsembleLoadError(f"{folder / MANIFEST}: test_time_flip must be true or false, not {flip!r}")
    try:
        return Ensemble(members, float(manifest.get("threshold", DEFAULT_THRESHOLD)), manifest.get("info"),
                        architectures, jit_compile, layers, fusion, regions, flip)
    except ValueError as exc:
        raise EnsembleLoadError(f"{folder / MANIFEST}: {exc}") from None


def load_keras_member(folder: Path, entry: Mapping[str, Any], verify: bool) -> keras.Model:
    """The Keras model of a manifest's member entry, checked against the entry (as `load_ensemble` checks it).

    Args:
        folder: the ensemble folder.
        entry: the member's manifest entry.
        verify: check the file's sha256.

    Raises:
        EnsembleLoadError: naming the file and what is wrong with it.
    """
    import keras

    from .registry import list_models

    arch, size, path = entry["architecture"], int(entry["input_size"]), folder / entry["file"]
    if arch not in list_models():
        raise EnsembleLoadError(f"{path}: unknown architecture {arch!r} in the manifest")
    _check_member_file(path, entry.get("sha256"), verify)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for broken archives
        raise EnsembleLoadError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from None
    if model.name != arch:
        raise EnsembleLoadError(f"{path}: holds a {model.name!r} model, the manifest says {arch!r}")
    if tuple(model.input_shape[1:]) != (size, size, 3):
        raise EnsembleLoadError(
            f"{path}: input shape {model.input_shape[1:]} does not match the manifest's {size}x{size}x3")
    recorded = {k: entry[k] for k in ("gradcam_layer", "map_layer", "map_stride") if entry.get(k)}
    _check_heatmap_layers(path, model, recorded | {"map_stride": _map_stride(entry, model, arch)}, size)
    return model


def _check_member_file(path: Path, sha256: str | None, verify: bool) -> None:
    """A member file (Keras or ONNX) is there and, with `verify`, has the manifest's checksum."""
    if not path.is_file():
        raise EnsembleLoadError(f"{path}: member file is missing")
    if verify and sha256_file(path) != sha256:
        raise EnsembleLoadError(f"{path}: checksum mismatch (the file is corrupt, truncated or replaced)")


def _onnx_member(folder: Path, entry: Mapping[str, Any], verify: bool) -> OnnxMember:
    """The ONNX Runtime member of a manifest's member entry, checked against the entry; its Keras model
    loads (and is checked) the first time it is needed."""
    name, size, keras_path = entry["name"], int(entry["input_size"]), folder / entry["file"]
    graph = entry.get("onnx")
    if not isinstance(graph, dict) or not isinstance(graph.get("file"), str):
        raise EnsembleLoadError(f"{folder / MANIFEST}: member {name!r} has no ONNX graph and the runtime is set "
                                f"to onnx; write them with python -m train.build_ensemble --add-onnx {folder}")
    path = folder / graph["file"]
    if Path(graph["file"]).name != graph["file"]:
        raise EnsembleLoadError(f"{path}: member files must lie in the ensemble folder")
    _check_member_file(path, graph.get("sha256"), verify)
    if not keras_path.is_file():
        raise EnsembleLoadError(f"{keras_path}: member file is missing")
    if not onnxruntime_available():
        raise EnsembleLoadError(f"{path}: onnxruntime is not installed (pip install onnxruntime), or set "
                                f"MURA_RUNTIME=keras")
    try:
        member = OnnxMember(path, entry["architecture"], entry.get("gradcam_layer") or "",
                            lambda: load_keras_member(folder, entry, verify))
    except Exception as exc:  # ONNX Runtime raises its own types for broken graphs
        raise EnsembleLoadError(f"{path}: cannot load the ONNX graph ({type(exc).__name__}: {exc})") from None
    if member.input_size != size:
        raise EnsembleLoadError(f"{path}: input side {member.input_size} does not match the manifest's {size}")
    if sorted(member.graph.outputs) != sorted(graph.get("outputs") or member.graph.outputs):
        raise EnsembleLoadError(f"{path}: outputs {sorted(member.graph.outputs)} are not the manifest's "
                                f"{sorted(graph['outputs'])}")
    if bool(entry.get("map_layer")) != member.has_lesion_map:
        raise EnsembleLoadError(f"{path}: the manifest and the graph disagree on whether it has a lesion map")
    if member.has_lesion_map:
        side, stride = member.map_side, int(entry.get("map_stride") or member.map_stride)
        if side not in (size // stride, -(-size // stride)):
            raise EnsembleLoadError(f"{path}: a {side}-cell lesion map at stride {stride} does not "
                                    f"cover the {size} px input")
    return member


def _positive_weight(recorded: Mapping[str, Any], name: str) -> float:
    """A member's training weight of lesion cells, as recorded (the manifest); 1 (the map as it is) when not."""
    try:
        weight = float(recorded.get("map_positive_weight") or 1.0)
    except (TypeError, ValueError):
        weight = float("nan")
    if not weight > 0 or not np.isfinite(weight):
        raise ValueError(f"member {name!r}: map_positive_weight must be a number > 0, "
                         f"not {recorded.get('map_positive_weight')!r}")
    return weight


def _map_evidence(recorded: Mapping[str, Any], name: str, explainer) -> float:
    """The lesion map's say in a member's probability, as recorded (`decision.member_probability`); 0 (the
    classifier alone) when not. Refused outside [0, 1] or for a member without a lesion map."""
    value = recorded.get("map_evidence") or 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"member {name!r}: map_evidence must be a number in [0, 1], not {value!r}")
    if value and not explainer.has_lesion_map:
        raise ValueError(f"member {name!r}: map_evidence {value} needs a lesion map, and the member has none")
    return float(value)


def _map_stride(recorded: Mapping[str, Any], model: keras.Model, architecture: str) -> int:
    """A member's lesion-map stride: as recorded (the manifest), else read off the model (input side /
    map side: 16 for a one-layer head, 8 with a decoder), else the architecture's spec."""
    if recorded.get("map_stride"):
        return int(recorded["map_stride"])
    try:
        side, size = model.get_layer(LESION_MAP).output.shape[1], model.input_shape[1]
    except ValueError:  # no lesion map
        side = size = None
    if side and size:
        return size // side
    from .registry import get_spec

    return get_spec(architecture).map_stride


def _check_heatmap_layers(path: Path, model: keras.Model, layers: Mapping[str, Any], size: int) -> None:
    names = {layer.name for layer in model.layers}
    for key in ("gradcam_layer", "map_layer"):
        if layers.get(key) and layers[key] not in names:
            raise EnsembleLoadError(f"{path}: the manifest's {key} {layers[key]!r} is not a layer of the model")
    if LESION_MAP in names:
        side, stride = model.get_layer(LESION_MAP).output.shape[1], int(layers["map_stride"])
        if side is not None and side not in (size // stride, -(-size // stride)):
            raise EnsembleLoadError(f"{path}: a {side}-cell lesion map at stride {stride} does not "
                                    f"cover the {size} px input")
