"""A study's result as a PDF report to hand out (fpdf2).

It holds the verdict, each model's probability against the threshold, the warnings, the heatmaps of
every image read with its suspected regions (drawn and listed: box, score, finding or not), the
installed model (name, version, checksum) with its test figures, and the not-for-diagnosis statement.
It holds no patient identifier and no file name: images are called "Image 1", "Image 2", ..., and
nothing of a DICOM header but the body part is ever in a result.

fpdf2 because it is pure Python (no system library to install), small, actively released and
documented, embeds numpy/Pillow images directly and has tables; reportlab would also do, at several
times the size and with a C extension.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .body_parts import body_part_label
from .decision import verdict, verdict_text
from .notices import DISCLAIMER
from .results import StudyResult

PANELS_PER_ROW = 4
_PLAIN = str.maketrans({"≥": ">=", "≤": "<=", "–": "-", "—": "-", "·": "-", "…": "...", "’": "'", "‘": "'",
                        "“": '"', "”": '"', "×": "x", "−": "-"})


def _text(value: Any) -> str:
    """Text in the PDF's core-font alphabet (Latin-1): the few typographic signs we use spelled out."""
    return str(value).translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


def study_pdf(result: StudyResult, identity: Mapping[str, str], report: Mapping[str, Any] | None = None,
              body_part: str = "", body_part_source: str = "", alpha: float = 0.4) -> bytes:
    """The study report as PDF bytes.

    Args:
        result: the study's result (with heatmaps when predicted with `explain=True`).
        identity: the installed model (`installed.model_identity`): name, version, checksum.
        report: the installed ensemble's report.json (`reports.load_report`), for its test figures.
        body_part, body_part_source: the study's body part as shown, and where it comes from.
        alpha: heatmap opacity.

    Returns:
        The PDF file's bytes.
    """
    from fpdf import FPDF
    from PIL import Image

    from .charts import heatmap_panels

    result = result.with_body_part(body_part) if body_part else result
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title("MURA screen study report")
    pdf.set_creator("mura_core")
    pdf.add_page()
    width = pdf.epw

    def heading(text: str, size: int = 13) -> None:
        pdf.ln(2)
        pdf.set_font("helvetica", "B", size)
        pdf.multi_cell(width, 7, _text(text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 10)

    def line(text: str, style: str = "") -> None:
        pdf.set_font("helvetica", style, 10)
        pdf.multi_cell(width, 5, _text(text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 10)

    heading("MURA screen - study report", 16)
    line(f"Created {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    pdf.set_fill_color(255, 243, 205)
    pdf.set_font("helvetica", "B", 10)
    pdf.multi_cell(width, 6, _text(DISCLAIMER), border=1, fill=True, new_x="LMARGIN", new_y="NEXT")

    heading("Verdict")
    line(result.withheld or verdict_text(result.probability, result.threshold), "B")  # no verdict outside coverage
    n_read = sum(image.ok for image in result.images)
    part = body_part_label(result.body_part) or "unknown"
    line(f"Body part: {part}" + (f" ({body_part_source})" if body_part_source else "") +
         f". Images read: {n_read} of {len(result.images)}. Heatmaps: {result.cam_method or 'none'}.")
    line("Study probability = mean over the images read of the ensemble probability, itself the mean of "
         f"{len(result.members)} models; the verdict compares it with the installed threshold.")
    warnings = [result.warning] if result.warning else []
    warnings += [f"Image {i} was not used: {image.error}" for i, image in enumerate(result.images, 1)
                 if not image.ok]
    if warnings:
        heading("Warnings", 11)
        for warning in warnings:
            line(f"- {warning}")

    heading("Probabilities against the threshold", 11)
    with pdf.table(col_widths=(60, 30, 30, 30), text_align=("LEFT", "RIGHT", "RIGHT", "LEFT")) as table:
        table.row(["model", "study probability", "threshold", "verdict"])
        rows = [(m, result.member_probabilities.get(m)) for m in result.members]
        rows.append(("ensemble", result.probability))
        for name, probability in rows:
            table.row([_text(name), "-" if probability is None else f"{probability:.3f}",
                       f"{result.threshold:.3f}",
                       "not meaningful" if result.withheld else verdict(probability, result.threshold) or "-"])

    read = [(i, image) for i, image in enumerate(result.images, 1) if image.ok]
    if read:
        heading("Where the models looked", 11)
        line("Warm colours mark the regions that weighed most in each model's score (or, for lesion maps, "
             "where a model estimates a lesion). They show where a model looked, not where a lesion is.")
        side = (width - 3 * (PANELS_PER_ROW - 1)) / PANELS_PER_ROW
        if any(image.regions for _, image in read):
            line("Orange boxes are suspected regions, each with its score: solid where a region is a finding (its "
                 f"score at least the region threshold {result.region_threshold:.2f} in a study with an abnormal "
                 "verdict), dashed where it is only listed (below that threshold, or the verdict is normal or "
                 "withheld).")
        for number, image in read:
            panels = heatmap_panels(image, alpha, result.members,
                                    regions=[(region, result.is_finding(region)) for region in image.regions])
            if pdf.will_page_break(side + 16):
                pdf.add_page()
            line(f"Image {number}: ensemble probability {image.ensemble:.3f}", "B")
            for start in range(0, len(panels), PANELS_PER_ROW):
                if pdf.will_page_break(side + 8):
                    pdf.add_page()
                top = pdf.get_y()
                for k, (caption, picture) in enumerate(panels[start:start + PANELS_PER_ROW]):
                    x = pdf.l_margin + k * (side + 3)
                    picture_image = Image.fromarray(picture)
                    h = side * picture_image.height / max(picture_image.width, picture_image.height)
                    w = side * picture_image.width / max(picture_image.width, picture_image.height)
                    pdf.image(picture_image, x=x, y=top, w=w, h=h)
                    pdf.set_xy(x, top + side + 0.5)
                    pdf.set_font("helvetica", "", 7)
                    pdf.multi_cell(side, 3, _text(caption.replace("Original", "Radiograph")))
                pdf.set_xy(pdf.l_margin, top + side + 8)
            _region_table(pdf, result, image)
        pdf.set_font("helvetica", "", 10)

    heading("Installed model", 11)
    line(f"Name: {identity.get('name', '')}")
    line(f"Version: {identity.get('version', '')}")
    line(f"Checksum: {identity.get('checksum', '')}")
    line(f"Members: {', '.join(result.members)}; threshold {result.threshold:.4f}.")
    if report:
        _test_figures(pdf, report, line)

    heading("Statement", 11)
    line(DISCLAIMER, "B")
    line("This report holds no patient identifier: images are numbered, and no DICOM attribute other than "
         "the body part was read.")
    return bytes(pdf.output())


def _region_table(pdf, result: StudyResult, image) -> None:
    """An image's suspected regions as a table: box corners in the image's pixels, score, finding or not."""
    if not image.regions:
        return
    pdf.set_font("helvetica", "", 8)
    with pdf.table(col_widths=(20, 70, 25, 55), text_align=("LEFT", "LEFT", "RIGHT", "LEFT")) as table:
        table.row(["region", "box x0, y0 - x1, y1 (pixels)", "score", "shown as"])
        for k, region in enumerate(image.regions, 1):
            table.row([str(k), f"{region.x0}, {region.y0} - {region.x1}, {region.y1}", f"{region.score:.3f}",
                       "finding" if result.is_finding(region) else "below threshold (listed only)"])
    pdf.ln(2)
    pdf.set_font("helvetica", "", 10)


def _test_figures(pdf, report: Mapping[str, Any], line) -> None:
    """The installed ensemble's test metrics (with 95% intervals) as a table."""
    from .reports import model_card_metrics

    try:
        metrics = model_card_metrics(report)
    except (KeyError, TypeError, ValueError):
        return
    if metrics.empty:
        return
    data = report.get("data") or {}
    line(f"Test figures (ensemble; data: {data.get('format', '?')}, split {data.get('split', '?')}), "
         "95% bootstrap intervals:")
    with pdf.table(col_widths=(60, *([60] * len(metrics.columns))), text_align="LEFT") as table:
        table.row(["metric", *[_text(c) for c in metrics.columns]])
        for name, row in metrics.iterrows():
            table.row([_text(name), *[_text(v) for v in row]])
