"""Texts every output of the product carries, importable without TensorFlow (the dashboard's first paint)."""

DISCLAIMER = (
    "Decision support for research and teaching only - not a diagnosis. "
    "A qualified clinician must read every study."
)
