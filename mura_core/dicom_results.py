"""A study's result as DICOM (highdicom): a Comprehensive SR and secondary-capture heatmaps.

Both become new series in the source study, so a PACS viewer shows them beside the radiographs:

* the **structured report** holds the verdict, the study's ensemble probability, each model's
  probability, the threshold, the coverage warning when there is one, the model (name, version,
  checksum from the manifest), the not-for-diagnosis statement, and each image it read (referenced
  by SOP instance, with that image's ensemble probability and its suspected regions: each a closed
  POLYLINE SCOORD in the image's pixel coordinates, selected from that instance, with its score and
  whether it is shown as a finding, `StudyResult.is_finding`);
* each **secondary capture** is the fused heatmap over one radiograph, with "NOT FOR DIAGNOSIS"
  burnt into the pixels and said in its series description and image comments.

The patient and study attributes are copied from the source images (that is what files the results
into the right study); nothing else of the source header is copied. Codes without a standard one use
the private coding scheme `99MURA`, declared in the objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .decision import verdict_text
from .notices import DISCLAIMER
from .results import StudyResult

RESULT_SERIES_PREFIX = "MURA screen"
"""Series descriptions of our result series start with this; the PACS reader skips such series."""
MANUFACTURER = "MURA screen (mura_core)"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS"
_SCHEME = "99MURA"


def _codes():
    from highdicom.sr import CodedConcept

    def private(value: str, meaning: str) -> CodedConcept:
        return CodedConcept(value, _SCHEME, meaning)

    return {
        "report": CodedConcept("18748-4", "LN", "Diagnostic imaging report"),
        "finding": CodedConcept("121071", "DCM", "Finding"),
        "impression": CodedConcept("121073", "DCM", "Impression"),
        "abnormal": CodedConcept("263654008", "SCT", "Abnormal"),
        "normal": CodedConcept("17621005", "SCT", "Normal"),
        "algorithm_name": CodedConcept("111001", "DCM", "Algorithm Name"),
        "algorithm_version": CodedConcept("111003", "DCM", "Algorithm Version"),
        "algorithm_parameters": CodedConcept("111002", "DCM", "Algorithm Parameters"),
        "source": CodedConcept("121112", "DCM", "Source of Measurement"),
        "unit": CodedConcept("1", "UCUM", "no units"),
        "study_probability": private("studyprob", "Study probability of abnormal (ensemble)"),
        "member_probability": private("memberprob", "Study probability of abnormal (one model)"),
        "image_probability": private("imageprob", "Image probability of abnormal (ensemble)"),
        "threshold": private("threshold", "Decision threshold"),
        "warning": private("warning", "Why the verdict may not be meaningful"),
        "notice": private("notice", "Not for diagnosis"),
        "image": private("image", "Image read"),
        "region": private("region", "Suspected fracture region"),
        "image_region": CodedConcept("111030", "DCM", "Image Region"),
        "original_source": CodedConcept("111040", "DCM", "Original Source"),
        "region_score": private("regionscore", "Region score"),
        "region_status": private("regionstatus", "Region shown as"),
        "region_threshold": private("regionthreshold", "Region threshold"),
    }


def _coding_scheme():
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(designator=_SCHEME, name="MURA screen private codes",
                                          responsible_organization="mura_core")


def _read_sources(result: StudyResult, sources: Sequence) -> list[tuple]:
    """(ImageResult, source dataset) for each image that was read, checked to be of one study."""
    if len(sources) != len(result.images):
        raise ValueError(f"{len(result.images)} image results but {len(sources)} source datasets")
    pairs = [(image, ds) for image, ds in zip(result.images, sources) if image.ok]
    if not pairs:
        raise ValueError("no image of the study was read: there is no result to store")
    studies = {str(ds.StudyInstanceUID) for _, ds in pairs}
    if len(studies) != 1:
        raise ValueError(f"the images come from {len(studies)} studies; results are stored per study")
    return pairs


def structured_report(result: StudyResult, sources: Sequence, identity: Mapping[str, str]):
    """The study's result as a Comprehensive SR in the source study.

    Args:
        result: the study's result (`Ensemble.predict_study`), its images in the order of `sources`.
        sources: the pydicom dataset of each image in `result.images` (unread ones are not referenced).
        identity: the installed model (`installed.model_identity`): name, version, checksum.

    Returns:
        A `highdicom.sr.ComprehensiveSR` (a pydicom `Dataset`).
    """
    from highdicom.sr import (
        CodeContentItem,
        ComprehensiveSR,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        ScoordContentItem,
        TextContentItem,
    )
    from pydicom.uid import generate_uid

    pairs = _read_sources(result, sources)
    code = _codes()
    contains = "CONTAINS"
    root = ContainerContentItem(code["report"])
    # Outside the ensemble's coverage no finding is coded: the impression says why (coverage.verdict_withheld).
    items = [] if result.withheld else [
        CodeContentItem(code["finding"], code[result.verdict], relationship_type=contains)]
    items += [
        TextContentItem(code["impression"], result.withheld or verdict_text(result.probability, result.threshold),
                        relationship_type=contains),
        NumContentItem(code["study_probability"], float(result.probability), code["unit"],
                       relationship_type=contains),
        NumContentItem(code["threshold"], float(result.threshold), code["unit"], relationship_type=contains),
    ]
    if result.region_threshold is not None:
        items.append(NumContentItem(code["region_threshold"], float(result.region_threshold), code["unit"],
                                    relationship_type=contains))
    for member in result.members:
        member_item = ContainerContentItem(code["member_probability"], relationship_type=contains)
        member_item.ContentSequence = [
            TextContentItem(code["algorithm_name"], member, relationship_type=contains),
            NumContentItem(code["member_probability"], float(result.member_probabilities[member]),
                           code["unit"], relationship_type=contains),
        ]
        items.append(member_item)
    if result.warning:
        items.append(TextContentItem(code["warning"], result.warning[:1024], relationship_type=contains))
    items += [
        TextContentItem(code["algorithm_name"], identity["name"][:1024], relationship_type=contains),
        TextContentItem(code["algorithm_version"], identity["version"], relationship_type=contains),
        TextContentItem(code["algorithm_parameters"], f"manifest {identity['checksum']}",
                        relationship_type=contains),
    ]
    for image, ds in pairs:
        image_item = ContainerContentItem(code["image"], relationship_type=contains)
        image_item.ContentSequence = [
            ImageContentItem(code["source"], ds.SOPClassUID, ds.SOPInstanceUID, relationship_type=contains),
            NumContentItem(code["image_probability"], float(image.ensemble), code["unit"],
                           relationship_type=contains),
        ]
        for region in image.regions:
            outline = ScoordContentItem(code["image_region"], "POLYLINE", _outline(region), relationship_type=contains)
            outline.ContentSequence = [ImageContentItem(code["original_source"], ds.SOPClassUID, ds.SOPInstanceUID,
                                                        relationship_type="SELECTED FROM")]
            region_item = ContainerContentItem(code["region"], relationship_type=contains)
            region_item.ContentSequence = [
                outline,
                NumContentItem(code["region_score"], float(region.score), code["unit"], relationship_type=contains),
                TextContentItem(code["region_status"], REGION_FINDING if result.is_finding(region) else REGION_LISTED,
                                relationship_type=contains),
            ]
            image_item.ContentSequence.append(region_item)
        items.append(image_item)
    items.append(TextContentItem(code["notice"], DISCLAIMER, relationship_type=contains))
    root.ContentSequence = items
    return ComprehensiveSR(
        evidence=[ds for _, ds in pairs], content=root, series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description=f"{RESULT_SERIES_PREFIX} report "
        f"({NOT_FOR_DIAGNOSIS.lower()})", coding_schemes=[_coding_scheme()],
        specific_character_set="ISO_IR 192",  # UTF-8: the verdict sentence holds '≥'
    )


REGION_FINDING, REGION_LISTED = "finding", "below threshold (listed only)"
"""How the SR says whether a region is shown as a finding."""


def _outline(region) -> np.ndarray:
    """A region's box as a closed polyline of (column, row) pairs; SR image coordinates put the top-left
    corner of the top-left pixel at (0, 0), so the box's pixel edges are its corners."""
    x0, y0, x1, y1 = (float(v) for v in region.xyxy)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def _stamp(rgb: np.ndarray) -> np.ndarray:
    """Burn "NOT FOR DIAGNOSIS" into the top of a picture (white on a black band)."""
    import cv2

    out = rgb.copy()
    scale = max(out.shape[1] / 900.0, 0.35)
    (width, height), base = cv2.getTextSize(NOT_FOR_DIAGNOSIS, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = height + base + 8
    out[:band] = 0
    cv2.putText(out, NOT_FOR_DIAGNOSIS, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def heatmap_captures(result: StudyResult, sources: Sequence, alpha: float = 0.4) -> list:
    """The fused ensemble heatmap over each image read, as secondary-capture images.

    Args:
        result: a study result computed with `explain=True` (its images in the order of `sources`).
        sources: the pydicom dataset of each image in `result.images`.
        alpha: heatmap opacity.

    Returns:
        `highdicom.sc.SCImage`s, one per image read, in one new series, marked not for diagnosis.

    Raises:
        ValueError: the result has no heatmaps.
    """
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    from .gradcam import overlay

    pairs = _read_sources(result, sources)
    if any("ensemble" not in image.heatmaps for image, _ in pairs):
        raise ValueError("the result has no heatmaps: predict the study with explain=True")
    series_uid, captures = generate_uid(), []
    method = result.cam_method or "heatmap"
    for number, (image, ds) in enumerate(pairs, start=1):
        picture = _stamp(overlay(image.image, image.heatmaps["ensemble"], alpha))
        capture = SCImage.from_ref_dataset(
            ds, picture, "RGB", 8, "PATIENT", series_uid, SC_SERIES_NUMBER, generate_uid(), number,
            MANUFACTURER, patient_orientation=("L", "F"),
            series_description=f"{RESULT_SERIES_PREFIX} heatmaps ({method}, {NOT_FOR_DIAGNOSIS.lower()})",
        )
        # highdicom asks for an orientation in the patient frame; keep the source's (often empty) instead
        capture.PatientOrientation = ds.get("PatientOrientation", "")
        capture.Laterality = ds.get("Laterality", "")  # type 2C for paired body parts: unknown is empty
        capture.BurnedInAnnotation = "YES"
        capture.ImageComments = (f"{NOT_FOR_DIAGNOSIS}. Fused {method} heatmap of the ensemble over the "
                                 f"radiograph; ensemble probability {image.ensemble:.3f}. {DISCLAIMER}")
        capture.DerivationDescription = f"{method} heatmap of the MURA screen ensemble overlaid on the source"
        source = Dataset()
        source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        capture.SourceImageSequence = [source]
        captures.append(capture)
    return captures


def result_datasets(result: StudyResult, sources: Sequence, identity: Mapping[str, str],
                    heatmaps: bool = True) -> list:
    """Everything stored for a study: the SR, then the heatmap captures when the result has heatmaps."""
    out = [structured_report(result, sources, identity)]
    if heatmaps and all("ensemble" in image.heatmaps for image in result.images if image.ok):
        out += heatmap_captures(result, sources)
    return out


def report_values(sr) -> dict:
    """The numbers and texts of an SR written by `structured_report`, read back (for checks and tests).

    Returns:
        {"finding", "study_probability", "threshold", "region_threshold", "members": {name: p},
         "images": {sop uid: p}, "regions": [{"sop", "box" (x0, y0, x1, y1), "score", "status"}],
         "texts": {concept meaning: text}}.
    """
    out = {"members": {}, "images": {}, "regions": [], "texts": {}}
    for item in sr.ContentSequence:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        kind = item.ValueType
        if kind == "CODE":
            out["finding"] = item.ConceptCodeSequence[0].CodeMeaning
        elif kind == "NUM":
            value = float(item.MeasuredValueSequence[0].NumericValue)
            key = {"studyprob": "study_probability", "regionthreshold": "region_threshold"}
            out[key.get(item.ConceptNameCodeSequence[0].CodeValue, "threshold")] = value
        elif kind == "TEXT":
            out["texts"][meaning] = str(item.TextValue)
        elif kind == "CONTAINER":
            children = {child.ValueType: child for child in item.ContentSequence}
            value = float(children["NUM"].MeasuredValueSequence[0].NumericValue)
            if "IMAGE" in children:
                sop = children["IMAGE"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                out["images"][str(sop)] = value
                out["regions"] += [_region_values(child) for child in item.ContentSequence
                                   if child.ValueType == "CONTAINER"]
            else:
                out["members"][str(children["TEXT"].TextValue)] = value
    return out


def _region_values(item) -> dict:
    """A region container of `structured_report` read back: its source instance, box, score and status."""
    children = {child.ValueType: child for child in item.ContentSequence}
    outline = children["SCOORD"]
    points = np.asarray(outline.GraphicData, dtype=float).reshape(-1, 2)
    return {"sop": str(outline.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
            "box": (*points.min(axis=0).tolist(), *points.max(axis=0).tolist()),
            "score": float(children["NUM"].MeasuredValueSequence[0].NumericValue),
            "status": str(children["TEXT"].TextValue)}
