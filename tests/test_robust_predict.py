"""Every odd file through the ensemble and the CLI: the same radiograph gets the same probability in any
form, bad files get one clear error while the rest is predicted, and no DICOM identifier leaks out."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from mura_core import cli
from mura_core.ensemble import Ensemble
from mura_core.imaging import load_image
from mura_core.preprocessing import load_for_model
from mura_core.registry import create_model
from tests.corpus import BAD, GOOD, dicom_dataset, write_corpus

IDENTIFIERS = {"PatientName": "DOE^JANE", "PatientID": "PID-0042-XYZ", "PatientBirthDate": "19700131",
               "AccessionNumber": "ACC-99887766", "InstitutionName": "St Example Hospital",
               "ReferringPhysicianName": "WHO^DR"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def ensemble(corpus):
    """A tiny ensemble whose output really depends on the image: its random head is rescaled so that the
    base radiograph and its mirror image lie about 2 logits apart around 0 (untrained heads give ~0.5)."""
    keras.utils.set_random_seed(11)
    model = create_model("densenet121", input_size=64, dense_units=16)
    head = model.get_layer("head_logit")
    logits = keras.Model(model.input, head.output)
    base = load_for_model(corpus["png8"], 64)
    pair = np.stack([base, base[::-1]]).astype(np.float32)
    low, high = logits.predict(pair, verbose=0)[:, 0]
    kernel, bias = head.get_weights()
    scale = 2.0 / abs(high - low)
    head.set_weights([kernel * scale, bias * scale - (low + high) / 2 * scale])
    return Ensemble({"m": model}, threshold=0.5)


def test_every_form_gets_the_same_probability(ensemble, corpus):
    keys = [k for k in GOOD if k != "png_large"]
    result = ensemble.predict_study([corpus[k] for k in keys])
    probs = {k: r.ensemble for k, r in zip(keys, result.images)}
    assert all(r.ok for r in result.images), result.errors
    reference = probs["png8"]
    for key, prob in probs.items():
        tolerance = 0.03 if GOOD[key].tolerance == "jpeg" else 0.01
        assert prob == pytest.approx(reference, abs=tolerance), key
    # The check has teeth: another radiograph gets a clearly different probability.
    other = ensemble.predict_study([np.flipud(load_image(corpus["png8"]))]).probability
    assert abs(other - reference) > 0.2, (other, reference)


def test_bad_files_each_get_one_clear_error(ensemble, corpus):
    good, bad = [corpus["png8"]], [corpus[k] for k in BAD]
    result = ensemble.predict_study(good + bad)
    assert result.images[0].ok and result.probability is not None
    for image, key in zip(result.images[1:], BAD):
        assert not image.ok, key
        assert "Traceback" not in image.error and "Error(" not in image.error


def test_cli_over_the_corpus(ensemble, corpus, tmp_path):
    weights = ensemble.save(tmp_path / "weights")
    out = tmp_path / "predictions.csv"
    folder = next(iter(corpus.values())).parent
    status = cli.main(["predict", "--weights", str(weights), "--out", str(out), str(folder)])
    assert status == 1
    rows = pd.read_csv(out, keep_default_na=False)
    by_name = {row["path"].rsplit("/", 1)[-1]: row for _, row in rows.iterrows()}
    for key, case in GOOD.items():
        assert by_name[case.file_name]["error"] == "" and by_name[case.file_name]["m"] != "", key
    for key, case in BAD.items():
        row = by_name[case.file_name]
        assert row["error"] != "" and row["ensemble"] == "" and row["verdict"] == "", key


def test_cli_with_nothing_to_predict(ensemble, tmp_path, capsys):
    weights = ensemble.save(tmp_path / "weights")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "predictions.csv"
    status = cli.main(["predict", "--weights", str(weights), "--out", str(out), str(tmp_path / "nowhere"), str(empty)])
    assert status == 1
    rows = pd.read_csv(out, keep_default_na=False)
    assert rows["error"].tolist() == ["file not found", "folder holds no image files"]
    assert "0 of 2 inputs predicted" in capsys.readouterr().err


def test_no_patient_identifier_in_any_output(ensemble, corpus, tmp_path, capsys):
    from tests.corpus import base_radiograph

    ds = dicom_dataset(base_radiograph(), 8, **IDENTIFIERS)
    path = tmp_path / "study" / "view1.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert b"DOE^JANE" in raw

    result = ensemble.predict_study([raw], explain=True, names=["view1.dcm"])
    assert result.images[0].ok and result.images[0].body_part == "HAND"
    outputs = [json.dumps(result.to_dict()), result.to_frame().to_csv(), repr(result.to_dict())]
    weights = ensemble.save(tmp_path / "weights")
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", "--weights", str(weights), "--out", str(out), str(path.parent)]) == 0
    outputs += [out.read_text(), *capsys.readouterr()]
    for text in outputs:
        for value in IDENTIFIERS.values():
            assert value not in text
