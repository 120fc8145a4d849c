"""The Diagnose page's PDF report download: made only when the button is clicked."""

from __future__ import annotations


def pdf_report(result, body_part: str, body_part_source: str, alpha: float):
    """A callable that makes the study's PDF report when the download is clicked (`st.download_button`)."""
    def make() -> bytes:
        from mura_core import installed, reports
        from mura_core.pdf_report import study_pdf

        folder = installed.weights_folder()
        try:
            report = reports.load_report(installed.report_path(folder))
        except (reports.ReportError, OSError):
            report = None
        return study_pdf(result, installed.model_identity(folder), report, body_part, body_part_source, alpha)

    return make
