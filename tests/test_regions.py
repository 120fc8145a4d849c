"""Fracture regions read off a map, when they are findings, and the detector metrics on crafted cases."""

from __future__ import annotations

import numpy as np
import pytest

from mura_core.regions import (
    Region,
    RegionParams,
    RegionSettings,
    average_precision,
    box_iou,
    detection_metrics,
    find_regions,
    froc_curve,
    match_detections,
    recall_at_fp_rate,
    region_is_finding,
)


def _blob_map(shape, centres, sigma=6.0, values=None):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    heat = np.zeros(shape, np.float32)
    for k, (row, col) in enumerate(centres):
        value = 1.0 if values is None else values[k]
        heat = np.maximum(heat, value * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma ** 2)))
    return heat


@pytest.mark.parametrize("mode", ["components", "peaks"])
def test_two_blobs_give_two_boxes_around_them_scored_by_their_height(mode):
    heat = _blob_map((200, 300), [(50, 60), (150, 220)], values=[0.9, 0.6])
    found = find_regions(heat, heat.shape, RegionParams(mode=mode, level=0.5, floor=0.1))
    assert [round(r.score, 2) for r in found] == [0.9, 0.6]  # the map's maximum inside, highest first
    first, second = found
    assert first.x0 < 60 < first.x1 and first.y0 < 50 < first.y1
    assert second.x0 < 220 < second.x1 and second.y0 < 150 < second.y1
    if mode == "components":  # at half the global maximum, the lower blob keeps only its top
        assert (second.x1 - second.x0) < (first.x1 - first.x0)


def test_regions_are_in_image_pixels_for_a_coarse_map_of_a_large_image():
    coarse = np.zeros((10, 10), np.float32)
    coarse[2, 7] = 1.0  # one hot cell: x 7, y 2 of 10
    found = find_regions(coarse, (2000, 1000), RegionParams(level=0.9, floor=0.0, min_area=0.0))
    assert len(found) == 1
    region = found[0]
    assert 0 <= region.x0 < region.x1 <= 1000 and 0 <= region.y0 < region.y1 <= 2000
    centre_x, centre_y = (region.x0 + region.x1) / 2, (region.y0 + region.y1) / 2
    assert abs(centre_x - 750) < 60 and abs(centre_y - 500) < 120  # cell (7, 2)'s centre in the image


def test_faint_flat_or_broken_maps_give_no_region():
    assert find_regions(np.full((32, 32), 0.02, np.float32), (64, 64), RegionParams(floor=0.05)) == []
    assert find_regions(np.zeros((32, 32), np.float32), (64, 64), RegionParams(floor=0.0)) == []
    assert find_regions(np.full((8, 8), np.nan, np.float32), (64, 64)) == []
    assert find_regions(np.zeros((0, 0), np.float32), (64, 64)) == []


def test_min_area_padding_max_regions_and_probability_weight():
    heat = _blob_map((200, 200), [(40, 40), (100, 150), (160, 60)], sigma=5, values=[0.9, 0.8, 0.7])
    base = RegionParams(level=0.5, floor=0.1, min_area=0.0)
    assert len(find_regions(heat, heat.shape, base)) == 3
    assert len(find_regions(heat, heat.shape, RegionParams(level=0.5, floor=0.1, max_regions=2))) == 2
    assert find_regions(heat, heat.shape, RegionParams(level=0.5, floor=0.1, min_area=0.05)) == []
    plain, padded = find_regions(heat, heat.shape, base)[0], find_regions(
        heat, heat.shape, RegionParams(level=0.5, floor=0.1, min_area=0.0, padding=0.5))[0]
    assert padded.x1 - padded.x0 >= 2 * (plain.x1 - plain.x0) - 2
    weighted = find_regions(heat, heat.shape, RegionParams(level=0.5, floor=0.1, probability_weight=0.5), 0.25)
    assert weighted[0].score == pytest.approx((0.9 * 0.25) ** 0.5, abs=0.01)


def test_bad_parameters_and_manifest_entries_are_named():
    with pytest.raises(ValueError, match="mode 'blobs'"):
        RegionParams(mode="blobs")
    with pytest.raises(ValueError, match="level 0"):
        RegionParams(level=0)
    with pytest.raises(ValueError, match="manifest.json: bad 'regions' entry .*unknown region parameters size"):
        RegionSettings.from_manifest({"regions": {"params": {"size": 3}}}, "manifest.json")
    with pytest.raises(ValueError, match="outside"):
        RegionSettings.from_manifest({"regions": {"threshold": 2}})
    assert RegionSettings.from_manifest({}) == RegionSettings()  # an older manifest: the defaults
    settings = RegionSettings(RegionParams(level=0.4), 0.3, "rule", {"ap50": 0.1})
    assert RegionSettings.from_manifest({"regions": settings.to_info()}) == settings


def test_a_region_is_a_finding_only_in_an_abnormal_study_inside_the_coverage():
    assert region_is_finding(0.8, 0.5, "abnormal")
    assert not region_is_finding(0.4, 0.5, "abnormal")  # below the region threshold
    assert not region_is_finding(0.8, 0.5, "normal")  # a normal verdict's regions are listed below it
    assert not region_is_finding(0.8, 0.5, "abnormal", "No verdict: humerus is outside the model's training data")
    assert not region_is_finding(0.8, 0.5, None)


def _r(x0, y0, x1, y1, score):
    return Region(x0, y0, x1, y1, score)


def test_box_iou_known_values():
    assert box_iou([(0, 0, 10, 10)], [(0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30)]).tolist() == \
        [[1.0, pytest.approx(50 / 150), 0.0]]


def test_ap_of_a_perfect_detector_is_one_and_of_no_detection_zero():
    truths = [[(0, 0, 10, 10)], []]
    assert detection_metrics([[_r(0, 0, 10, 10, 0.9)], []], truths)["ap50"] == 1.0
    empty = detection_metrics([[], []], truths)
    assert empty["ap50"] == 0.0 and empty["recall_at_1_fp"] == 0.0


def test_ap_counts_a_false_positive_on_a_normal_image_ranked_above_the_hit():
    truths = [[(0, 0, 10, 10)], []]
    hit_first = [[_r(0, 0, 10, 10, 0.9)], [_r(0, 0, 10, 10, 0.8)]]
    fp_first = [[_r(0, 0, 10, 10, 0.8)], [_r(0, 0, 10, 10, 0.9)]]
    assert detection_metrics(hit_first, truths)["ap50"] == 1.0
    assert detection_metrics(fp_first, truths)["ap50"] == pytest.approx(0.5)


def test_all_point_interpolation_uses_the_precision_envelope():
    # two boxes; ranked hit (0.9), false positive (0.8), hit (0.7): precision 1 at recall 0.5, 2/3 at recall 1
    truths = [[(0, 0, 10, 10), (50, 50, 60, 60)], []]
    found = [[_r(0, 0, 10, 10, 0.9), _r(50, 50, 60, 60, 0.7)], [_r(0, 0, 5, 5, 0.8)]]
    assert detection_metrics(found, truths)["ap50"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    scores, hits, n = match_detections(found, truths)
    assert average_precision(scores, hits, n) == pytest.approx(5 / 6)


def test_a_second_detection_of_one_box_is_a_false_positive_and_tied_scores_come_in_together():
    truths = [[(0, 0, 10, 10)]]
    scores, hits, n = match_detections([[_r(0, 0, 10, 10, 0.9), _r(0, 0, 10, 9, 0.8)]], truths)
    assert hits.tolist() == [True, False] and n == 1
    tied = [[_r(0, 0, 10, 10, 0.5), _r(40, 40, 50, 50, 0.5)]]
    assert detection_metrics(tied, truths)["ap50"] == pytest.approx(0.5)  # one point: recall 1, precision 1/2


def test_ap_over_iou_thresholds_counts_the_thresholds_a_box_passes():
    truths = [[(0, 0, 100, 100)]]
    found = [[_r(0, 0, 100, 62, 0.9)]]  # IoU 0.62: a hit at 0.50, 0.55 and 0.60 only
    figures = detection_metrics(found, truths)
    assert figures["ap50"] == 1.0 and figures["ap50_95"] == pytest.approx(0.3)


def test_froc_recall_at_false_positives_per_image():
    # 4 images, 2 boxes; hits at 0.9 and 0.5, false positives at 0.8, 0.7, 0.6 (on normal images)
    truths = [[(0, 0, 10, 10)], [(0, 0, 10, 10)], [], []]
    found = [[_r(0, 0, 10, 10, 0.9)], [_r(0, 0, 10, 10, 0.5), _r(50, 50, 60, 60, 0.8)],
             [_r(0, 0, 10, 10, 0.7)], [_r(0, 0, 10, 10, 0.6)]]
    scores, hits, n = match_detections(found, truths)
    fppi, recall, thresholds = froc_curve(scores, hits, n, 4)
    assert fppi.tolist() == [0, 0, 0.25, 0.5, 0.75, 0.75] and recall.tolist() == [0, 0.5, 0.5, 0.5, 0.5, 1.0]
    assert thresholds[0] == np.inf
    assert recall_at_fp_rate(fppi, recall, 0.5) == 0.5 and recall_at_fp_rate(fppi, recall, 1.0) == 1.0
    figures = detection_metrics(found, truths)
    assert figures["recall_at_0.5_fp"] == 0.5 and figures["recall_at_1_fp"] == 1.0
    assert figures["froc"]["fp_per_image"][-1] == 0.75 and figures["n_regions"] == 5


def test_matching_needs_one_list_of_boxes_per_image():
    with pytest.raises(ValueError, match="2 images of detections but 1"):
        match_detections([[], []], [[]])


@pytest.fixture(scope="module")
def lesion_ensemble(tmp_path_factory):
    """A tiny untrained one-member ensemble with a lesion map, saved with chosen region settings."""
    import keras

    from mura_core.ensemble import Ensemble
    from mura_core.registry import create_model

    keras.utils.set_random_seed(5)
    model = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True)
    settings = RegionSettings(RegionParams(floor=0.0, min_area=0.0, level=0.7), 0.2, "test")
    ensemble = Ensemble({"mnv2": model}, threshold=0.0, regions=settings)  # threshold 0: every study abnormal
    return ensemble, ensemble.save(tmp_path_factory.mktemp("regions") / "weights")


def _radiographs(n=2):
    from tests.mura_tree import fracatlas_images

    return [str(p) for p, _ in fracatlas_images(n, n)][:n]


def test_the_prediction_path_finds_regions_on_the_fused_lesion_map(lesion_ensemble):
    from mura_core.results import REGION_COLUMNS, region_table

    ensemble, _ = lesion_ensemble
    result = ensemble.predict_study(_radiographs(), explain=True)
    assert result.cam_method == "lesion_map" and result.region_threshold == 0.2
    for image in result.images:
        assert image.regions == find_regions(image.heatmaps["ensemble"], image.image.shape,
                                             ensemble.regions.params, image.ensemble)
        assert image.regions  # floor 0: an untrained map still has a maximum
        for region in image.regions:
            assert 0 <= region.x0 < region.x1 <= image.image.shape[1] and 0 <= region.y0 < region.y1
    rows = result.region_rows()
    assert len(rows) == sum(len(r.regions) for r in result.images)
    assert [row["finding"] for row in rows] == [row["score"] >= 0.2 for row in rows]  # an abnormal study
    frame = result.to_frame()
    assert frame["regions"].tolist() == [len(r.regions) for r in result.images]
    assert list(region_table(result).columns) == list(REGION_COLUMNS)
    without = ensemble.predict_study(_radiographs(), explain=True, regions=False)
    assert all(not image.regions for image in without.images)
    assert all(not image.regions for image in ensemble.predict_study(_radiographs(), explain=False).images)
    gradcam = ensemble.predict_study(_radiographs(), explain=True, method="gradcam")
    assert gradcam.region_threshold is None and all(not image.regions for image in gradcam.images)


def test_region_settings_travel_in_the_manifest_and_a_bad_entry_names_it(lesion_ensemble, tmp_path):
    import json
    import shutil

    from mura_core.ensemble import EnsembleLoadError, load_ensemble

    ensemble, folder = lesion_ensemble
    assert load_ensemble(folder).regions == ensemble.regions
    broken = shutil.copytree(folder, tmp_path / "broken")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["regions"]["params"]["mode"] = "blobs"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleLoadError, match="manifest.json: bad 'regions' entry .*mode 'blobs'"):
        load_ensemble(broken)
    manifest["regions"]["params"]["mode"] = "boxes"  # a mode this ensemble's members cannot serve
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleLoadError, match="manifest.json: region mode 'boxes' .* mnv2 has none"):
        load_ensemble(broken)
    del manifest["regions"]  # an ensemble installed before regions existed: the defaults
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert load_ensemble(broken).regions == RegionSettings()


def test_withheld_or_normal_studies_list_regions_without_findings(lesion_ensemble):
    from dataclasses import replace

    from mura_core.coverage import Coverage

    ensemble, _ = lesion_ensemble
    result = ensemble.predict_study(_radiographs(1), explain=True)
    assert any(row["finding"] for row in result.region_rows())
    normal = replace(result, verdict="normal")
    assert normal.region_rows() and not any(row["finding"] for row in normal.region_rows())
    coverage = Coverage(dataset="FracAtlas", body_parts=("XR_HAND",), positive_label="fracture", n_images=1)
    withheld = replace(result, coverage=coverage).with_body_part("XR_HUMERUS")
    assert withheld.withheld and not any(row["finding"] for row in withheld.region_rows())
    exported = withheld.to_dict()["images"][0]["regions"]
    assert exported and not any(region["finding"] for region in exported)


def _study_dicom(tiny_weights):
    """The first sample study of the tiny weights as DICOM: (datasets, their file bytes)."""
    import io

    from pydicom import dcmwrite

    from mura_core import demo_pacs

    datasets = demo_pacs.sample_studies_as_dicom(tiny_weights)
    study = [ds for ds in datasets if ds.StudyInstanceUID == datasets[0].StudyInstanceUID]
    files = []
    for ds in study:
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    return study, files


def test_the_sr_holds_each_region_selected_from_its_image_and_dciodvfy_accepts_it(lesion_ensemble, tiny_weights,
                                                                                   tmp_path):
    import shutil
    import subprocess

    import pydicom
    from pydicom import dcmwrite

    from mura_core import dicom_results

    ensemble, _ = lesion_ensemble
    study, files = _study_dicom(tiny_weights)
    result = ensemble.predict_study(files, explain=True)
    identity = {"name": "tiny", "version": "1", "checksum": "sha256:0"}
    sr = dicom_results.structured_report(result, study, identity)
    path = tmp_path / "sr.dcm"
    dcmwrite(path, sr, enforce_file_format=True)
    values = dicom_results.report_values(pydicom.dcmread(path))
    expected = [(ds.SOPInstanceUID, region) for image, ds in zip(result.images, study) for region in image.regions]
    assert len(values["regions"]) == len(expected) > 0 and values["region_threshold"] == pytest.approx(0.2)
    for read, (sop, region) in zip(values["regions"], expected):
        assert read["sop"] == sop and read["box"] == pytest.approx(region.xyxy)
        assert read["score"] == pytest.approx(region.score, abs=1e-6)
        assert read["status"] == (dicom_results.REGION_FINDING if result.is_finding(region)
                                  else dicom_results.REGION_LISTED)
    assert any(read["status"] == dicom_results.REGION_FINDING for read in values["regions"])
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []


def test_the_pdf_lists_and_draws_the_regions(lesion_ensemble, tiny_weights):
    import io

    from pypdf import PdfReader

    from mura_core.pdf_report import study_pdf

    ensemble, _ = lesion_ensemble
    _, files = _study_dicom(tiny_weights)
    result = ensemble.predict_study(files, explain=True)
    pdf = study_pdf(result, {"name": "tiny", "version": "1", "checksum": "sha256:0"})
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())
    assert "suspected regions" in text and "region threshold 0.20" in text
    for image in result.images:
        for region in image.regions:
            assert f"{region.x0}, {region.y0} - {region.x1}, {region.y1}" in text and f"{region.score:.3f}" in text
    assert "finding" in text


def test_cli_writes_one_row_per_region(lesion_ensemble, tmp_path, capsys):
    import pandas as pd

    from mura_core import cli

    ensemble, folder = lesion_ensemble
    paths = _radiographs()
    out = tmp_path / "regions.csv"
    assert cli.main(["predict", *paths, "--weights", str(folder), "--out", str(tmp_path / "p.csv"),
                     "--regions", str(out)]) == cli.EXIT_OK
    rows = pd.read_csv(out)
    assert tuple(rows.columns) == cli.REGION_CSV_COLUMNS
    expected = [(path, region) for path in paths
                for region in ensemble.predict_study([path], explain=True).images[0].regions]
    assert len(rows) == len(expected) > 0
    for row, (path, region) in zip(rows.itertuples(), expected):
        assert row.path == path and (row.x0, row.y0, row.x1, row.y1) == region.xyxy
        assert row.score == pytest.approx(region.score, abs=1e-5)
    assert cli.main(["predict", *paths, "--weights", str(folder), "--regions", str(out),
                     "--cam-method", "gradcam"]) == cli.EXIT_ERROR
    assert "--regions come from the ensemble's default heatmap (lesion_map)" in capsys.readouterr().err


def test_tuning_keeps_what_raises_ap_and_writes_the_manifest(lesion_ensemble, tmp_path, capsys):
    import json
    import shutil

    from mura_core.ensemble import load_ensemble
    from train import build_ensemble, tune_regions

    truths, maps = {}, {}
    for k in range(4):  # two fractured images (a bright blob on the box) and two normal ones (a faint blob)
        centre = (30 + 10 * k, 40)
        heat = _blob_map((120, 100), [centre], sigma=5, values=[0.9 if k < 2 else 0.3])
        maps[f"img{k}"] = {"map": heat, "shape": heat.shape, "probability": 0.8 if k < 2 else 0.2}
        truths[f"img{k}"] = [(centre[1] - 6, centre[0] - 6, centre[1] + 6, centre[0] + 6)] if k < 2 else []
    start = RegionParams(level=0.9, floor=0.0, min_area=0.0, probability_weight=0.0)
    before = tune_regions.score_variant(maps, truths, start)["ap50"]
    chosen, variants = tune_regions.tune(maps, truths, rounds=1, start=start)
    after = tune_regions.score_variant(maps, truths, chosen)
    assert after["ap50"] == 1.0 > before and variants["ap50"].max() == 1.0
    assert len(variants) == len(variants.drop_duplicates(subset=list(tune_regions.GRID)))  # each variant once
    assert "ap50=1.0000" in capsys.readouterr().out  # every variant's figures are printed

    _, folder = lesion_ensemble
    copy = shutil.copytree(folder, tmp_path / "weights")
    settings = RegionSettings(chosen, after["best_f1_threshold"], "test rule", {"ap50": after["ap50"]})
    tune_regions.write_settings(copy, settings)
    assert load_ensemble(copy).regions == settings
    bad = tmp_path / "regions.json"
    bad.write_text(json.dumps({"params": {"mode": "blobs"}}))
    with pytest.raises(SystemExit):
        build_ensemble.main(["--runs", "nowhere", "--out", str(tmp_path / "out"), "--regions", str(bad)])
    assert f"--regions {bad}" in capsys.readouterr().err


def test_boxes_mode_gives_each_peak_the_box_its_cell_regresses():
    heat = _blob_map((64, 64), [(16, 16), (48, 40)], sigma=3.0, values=[0.9, 0.6])
    field = np.zeros((8, 8, 4), np.float32)
    field[2, 2] = (0.125, 0.25, 0.375, 0.375)  # the cell of the first peak (row 16, col 16 of 64)
    field[6, 5] = (0.5, 0.75, 0.75, 0.875)  # the second's (row 48, col 40)
    params = RegionParams(mode="boxes", floor=0.1, min_area=0.0, probability_weight=0.0)
    found = find_regions(heat, (512, 256), params, boxes=field)  # an image 256 wide and 512 high
    assert [(r.x0, r.y0, r.x1, r.y1) for r in found] == [(32, 128, 96, 192), (128, 384, 192, 448)]
    assert [r.score for r in found] == pytest.approx([0.9, 0.6], abs=0.02)  # the map at each (blurred) peak
    with pytest.raises(ValueError, match="box head"):
        find_regions(heat, (64, 64), params)


def test_members_box_fields_are_averaged_at_the_finest_resolution():
    from mura_core.regions import box_field, fuse_box_fields

    assert fuse_box_fields([]) is None
    codes = np.zeros((4, 4, 4), np.float32)  # every cell: a box of one cell around its own centre
    coarse = box_field(codes)
    np.testing.assert_allclose(coarse[0, 0], (0.0, 0.0, 0.25, 0.25))
    fine = box_field(np.zeros((8, 8, 4), np.float32))
    fused = fuse_box_fields([coarse, fine])
    assert fused.shape == (8, 8, 4)
    np.testing.assert_allclose(fused[0, 0], (np.array([0.0, 0.0, 0.25, 0.25]) + [0.0, 0.0, 0.125, 0.125]) / 2)


def test_an_ensemble_with_box_heads_finds_each_region_with_its_regressed_box(tmp_path):
    import keras

    from mura_core.ensemble import Ensemble, load_ensemble
    from mura_core.regions import box_field
    from mura_core.registry import create_model

    keras.utils.set_random_seed(6)
    model = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=8,
                         lesion_boxes=True)
    head = model.get_layer("lesion_box")  # every cell: a box 2 cells wide and 3 high, centred on the cell
    head.set_weights([np.zeros_like(head.get_weights()[0]),
                      np.array([0.0, 0.0, np.log(2.0), np.log(3.0)], np.float32)])
    settings = RegionSettings(RegionParams(mode="boxes", floor=0.0, min_area=0.0, probability_weight=0.0), 0.2)
    ensemble = Ensemble({"boxed": model}, threshold=0.0, regions=settings)
    result = ensemble.predict_study(_radiographs(), explain=True)
    for image in result.images:
        np.testing.assert_allclose(image.box_field, box_field(np.tile([0.0, 0.0, np.log(2.0), np.log(3.0)],
                                                                      (8, 8, 1))), atol=1e-6)
        assert image.regions == find_regions(image.heatmaps["ensemble"], image.image.shape, settings.params,
                                             image.ensemble, image.box_field)
        height, width = image.image.shape[:2]
        for region in image.regions:  # 2 x 3 cells of 8: a quarter of the width, 3/8 of the height
            assert abs((region.x1 - region.x0) - width / 4) <= 2 or region.x0 == 0 or region.x1 == width
            assert abs((region.y1 - region.y0) - 3 * height / 8) <= 2 or region.y0 == 0 or region.y1 == height
        assert image.regions
    folder = ensemble.save(tmp_path / "weights")
    loaded = load_ensemble(folder)
    assert loaded.regions.params.mode == "boxes"
    again = loaded.predict_study(_radiographs(), explain=True)
    assert [i.regions for i in again.images] == [i.regions for i in result.images]
