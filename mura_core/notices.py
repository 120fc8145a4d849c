"""Texts every output of the product carries, importable without TensorFlow (the dashboard's first paint).

The model card's fixed texts live here too, so the Model card page and `MODEL_CARD.md`
(`train.model_card`) say the same: intended use (unless the manifest gives one), limitations, privacy.
"""

DISCLAIMER = (
    "Decision support for research and teaching only - not a diagnosis. "
    "A qualified clinician must read every study."
)

INTENDED_USE = (
    "Research and teaching: a second look at musculoskeletal radiographs of the upper extremity "
    "(MURA's seven body parts), flagging studies as normal or abnormal and showing where the models "
    "looked. Not for diagnosis, triage or any decision about a patient without a clinician's reading."
)
"""The intended use when the manifest's `info["intended_use"]` does not give one."""

LIMITATIONS = """\
- One verdict per study (normal / abnormal); the models do not say what the abnormality is.
- The threshold and the metrics hold for data like the evaluation data; other scanners, populations,
  body parts or image processing can change them without warning.
- Heatmaps show where a model looked, not where a lesion is; they can point at normal anatomy,
  hardware or markers.
- Outside the body parts the installed model was trained on (see *Coverage*), its verdicts are not
  meaningful; the Diagnose page and the CLI say so.
"""
"""Limitations of every ensemble, after the manifest's own `info["limitations"]`."""

PRIVACY = """\
- Uploaded images are processed in memory for the current session only; they are never written
  to disk by this app.
- No DICOM identifier (name, ID, dates, institution, accession number, ...) is kept, shown, logged or
  exported: only the pixels and the *Body Part Examined* attribute are read.
- Downloads hold the file names as you gave them, the probabilities and the verdict. Rename
  files before upload if their names could identify a patient.
"""
