"""The Diagnose page's PDF report download: made only when the button is clicked."""

from __future__ import annotations


def pdf_report(study, body_part: str, body_part_source: str, alpha: float):
    """A callable that makes the study's PDF report when the download is clicked (`st.download_button`).

    `study()` gives the study's result (the Diagnose page's cached `run_study`, so the callable holds the
    study's files, not its images and maps); the body part the reader chose is applied to it.
    """
    def make() -> bytes:
        from mura_core import installed, reports
        from mura_core.pdf_report import study_pdf

        result = study().with_body_part(body_part, body_part_source)
        folder = installed.weights_folder()
        try:
            report = reports.load_report(installed.report_path(folder))
        except (reports.ReportError, OSError):
            report = None
        return study_pdf(result, installed.model_identity(folder), report, body_part, body_part_source, alpha)

    return make
