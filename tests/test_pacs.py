"""The PACS round trip against a real Orthanc (DICOMweb plugin) on 127.0.0.1, one per test session.

Listing without patient identifiers, opening a study, the CLI (`predict --pacs`, same probabilities as
the same DICOM files read from disk), storing and reading back the SR and the heatmap captures
(checked by dciodvfy), a PACS that is down, credentials, the Diagnose page's PACS source, and the
PDF report. Needs Debian's `orthanc`, `orthanc-dicomweb` and `dicom3tools` (`.ci/run` installs them);
without Orthanc these tests are skipped, like the browser test without Chromium.
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pydicom
import pytest
from pydicom import dcmwrite

from mura_core import cli, demo_pacs, dicom_results, installed
from mura_core.pacs import STUDY_COLUMNS, PacsClient, PacsConfig, PacsError, pacs_config

USER, PASSWORD = "mura-test", "not-the-password-0"
IDENTIFIERS = ("Fictional", demo_pacs.DEMO_PATIENT_ID, "19700101")


@pytest.fixture(scope="session")
def pacs(tmp_path_factory, tiny_weights):
    """Orthanc with the tiny ensemble's sample studies as CR DICOM (fictional patient), with a login."""
    try:
        demo_pacs.orthanc_binary(), demo_pacs.dicomweb_plugin()
    except demo_pacs.OrthancError as exc:
        pytest.skip(str(exc))
    server = demo_pacs.start_orthanc(tmp_path_factory.mktemp("orthanc"), user=USER, password=PASSWORD)
    try:
        datasets = demo_pacs.sample_studies_as_dicom(tiny_weights)
        demo_pacs.upload(server, datasets)
        yield SimpleNamespace(server=server, url=server.url, datasets=datasets,
                              config=PacsConfig(server.url, USER, PASSWORD))
    finally:
        server.stop()


@pytest.fixture
def pacs_env(monkeypatch, pacs):
    monkeypatch.setenv("MURA_PACS_URL", pacs.url)
    monkeypatch.setenv("MURA_PACS_USER", USER)
    monkeypatch.setenv("MURA_PACS_PASSWORD", PASSWORD)
    return pacs


def _no_identifier(text: str) -> None:
    for identifier in IDENTIFIERS:
        assert identifier not in text, identifier


def _dciodvfy_errors(ds, path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    dcmwrite(path, ds, enforce_file_format=True)
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


# -------------------------------------------------------------------------- listing and opening


def test_listing_shows_no_patient_identifier(pacs):
    client = PacsClient(pacs.config)
    studies = client.list_studies()
    assert tuple(studies.columns) == STUDY_COLUMNS
    expected = pd.Series([ds.StudyInstanceUID for ds in pacs.datasets]).value_counts()
    assert len(studies) == len(expected) == 3
    assert dict(zip(studies["study_uid"], studies["n_images"])) == expected.to_dict()
    assert set(studies["body_part"]) == {"HAND"} and set(studies["modality"]) == {"CR"}
    assert studies["accession"].str.match(r"MURA-DEMO-\d{3}$").all()
    _no_identifier(studies.to_csv())

    one = client.list_studies(accession="002")
    assert list(one["accession"]) == ["MURA-DEMO-002"]
    latest = max(ds.StudyDate for ds in pacs.datasets)
    assert len(client.list_studies(since=latest)) == 1
    assert client.list_studies(since="20990101").empty


def test_open_study_gives_the_stored_pixels(pacs):
    client = PacsClient(pacs.config)
    uid = pacs.datasets[0].StudyInstanceUID
    study = client.open_study(uid)
    stored = [ds for ds in pacs.datasets if ds.StudyInstanceUID == uid]
    assert len(study.images) == len(stored) == 2 and not study.skipped
    assert study.accession == stored[0].AccessionNumber
    for image, original in zip(study.images, stored):
        read = pydicom.dcmread(io.BytesIO(image.data))
        assert read.SOPInstanceUID == original.SOPInstanceUID == image.sop_uid
        assert read.PixelData == original.PixelData


def test_a_study_that_is_gone_or_holds_no_image(pacs):
    client = PacsClient(pacs.config)
    with pytest.raises(PacsError, match="is not on the PACS"):
        client.open_study("1.2.826.0.1.3680043.8.498.1")
    # a study whose only instance has no pixel data (an image module without the image)
    from pydicom.uid import generate_uid

    empty = copy.deepcopy(pacs.datasets[0])
    empty.StudyInstanceUID, empty.SeriesInstanceUID = generate_uid(), generate_uid()
    empty.SOPInstanceUID = empty.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    empty.AccessionNumber = "MURA-EMPTY-1"
    del empty.PixelData
    client.store([empty])
    try:
        with pytest.raises(PacsError, match="holds no image.*not an image"):
            client.open_study(empty.StudyInstanceUID)
    finally:  # through Orthanc's own REST API: the DICOMweb plugin has no DELETE
        import requests

        root, auth = pacs.url.removesuffix("/dicom-web"), (USER, PASSWORD)
        found = requests.post(f"{root}/tools/lookup", data=empty.StudyInstanceUID, auth=auth, timeout=10).json()
        for item in found:
            requests.delete(f"{root}{item['Path']}", auth=auth, timeout=10).raise_for_status()
    assert len(client.list_studies()) == 3


def test_a_pacs_that_is_down(capsys, tiny_weights):
    down = PacsConfig(f"http://127.0.0.1:{demo_pacs.free_port()}/dicom-web", timeout=5)
    with pytest.raises(PacsError, match="cannot be reached.*is it running"):
        PacsClient(down).list_studies()
    code = cli.main(["predict", "--pacs", down.url, "--since", "20200101", "--weights", str(tiny_weights)])
    assert code == cli.EXIT_ERROR
    assert "cannot be reached" in capsys.readouterr().err


def test_credentials(pacs, tmp_path, monkeypatch):
    wrong = PacsConfig(pacs.url, USER, "wrong-password-9")
    with pytest.raises(PacsError, match=r"refused the credentials \(HTTP 401\)") as caught:
        PacsClient(wrong).list_studies()
    assert "wrong-password-9" not in str(caught.value) and "wrong-password-9" not in repr(wrong)
    with pytest.raises(PacsError, match="refused the credentials"):
        PacsClient(PacsConfig(pacs.url)).open_study(pacs.datasets[0].StudyInstanceUID)
    assert len(PacsClient(pacs.config).list_studies()) >= 3

    # the operator's configuration: .streamlit/secrets.toml, the environment winning over it
    for key in ("MURA_PACS_URL", "MURA_PACS_USER", "MURA_PACS_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'MURA_PACS_URL = "{pacs.url}/"\nMURA_PACS_USER = "{USER}"\n'
                       f'MURA_PACS_PASSWORD = "{PASSWORD}"\n')
    config = pacs_config(secrets_paths=[secrets])
    assert (config.url, config.user, config.password) == (pacs.url, USER, PASSWORD)
    PacsClient(config).check()
    monkeypatch.setenv("MURA_PACS_PASSWORD", "from-the-environment")
    assert pacs_config(secrets_paths=[secrets]).password == "from-the-environment"
    assert pacs_config(secrets_paths=[tmp_path / "none.toml"]) is None


# ------------------------------------------------------------------------- the CLI and the results


def test_cli_predicts_like_files_and_stores_results(pacs, pacs_env, tiny_weights, tmp_path, capsys):
    disk = tmp_path / "disk"
    for ds in pacs.datasets:
        folder = disk / ds.StudyInstanceUID
        folder.mkdir(parents=True, exist_ok=True)
        dcmwrite(folder / f"{ds.SOPInstanceUID}.dcm", ds, enforce_file_format=True)
    assert cli.main(["predict", str(disk), "--weights", str(tiny_weights), "--out", str(tmp_path / "disk.csv")]) == 0
    before = PacsClient(pacs.config).list_studies()
    out = tmp_path / "pacs.csv"
    code = cli.main(["predict", "--pacs", pacs.url, "--since", "20240101", "--weights", str(tiny_weights),
                     "--store-results", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    text = out.read_text()
    _no_identifier(text)
    from_pacs = pd.read_csv(out, keep_default_na=False)
    from_disk = pd.read_csv(tmp_path / "disk.csv", keep_default_na=False)
    assert list(from_pacs.columns) == list(from_disk.columns)
    assert (from_pacs["patient"] == "").all() and (from_pacs["error"] == "").all()
    from_pacs["sop"] = from_pacs["path"].str.rsplit("/", n=1).str[-1]
    from_disk["sop"] = from_disk["path"].map(lambda p: Path(p).stem)
    both = from_pacs.merge(from_disk, on="sop", suffixes=("_pacs", "_disk"))
    assert len(both) == len(pacs.datasets) == 4
    for column in ["mobilenetv2_a", "densenet121_b", "ensemble", "study_probability"]:
        assert (both[f"{column}_pacs"] - both[f"{column}_disk"]).abs().max() < 0.01, column
    assert (both["verdict_pacs"] == both["verdict_disk"]).all()
    assert (both["study_pacs"] == both["sop"].map({ds.SOPInstanceUID: ds.StudyInstanceUID
                                                   for ds in pacs.datasets})).all()

    # each study gained an SR series with its probability, and a heatmap series of its images
    client = PacsClient(pacs.config)
    identity = installed.model_identity(tiny_weights)
    for uid, rows in from_pacs.groupby("study"):
        series = client._client.search_for_series(uid, fields=["SeriesDescription", "Modality"])
        kinds = {s["0008103E"]["Value"][0]: s["00080060"]["Value"][0] for s in series if "0008103E" in s}
        sr_series = [d for d, m in kinds.items() if m == "SR" and d.startswith(dicom_results.RESULT_SERIES_PREFIX)]
        assert len(sr_series) == 1, kinds
        stored = client._client.retrieve_study(uid)
        srs = [ds for ds in stored if ds.Modality == "SR"]
        captures = [ds for ds in stored if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
        assert len(srs) == 1 and len(captures) == len(rows)
        path = tmp_path / f"sr-{uid}.dcm"
        assert _dciodvfy_errors(srs[0], path) == []
        sr = pydicom.dcmread(path)  # read back from the file
        values = dicom_results.report_values(sr)
        assert values["study_probability"] == pytest.approx(rows["study_probability"].iloc[0], abs=1e-5)
        assert values["threshold"] == pytest.approx(rows["threshold"].iloc[0])
        assert values["finding"] == rows["verdict"].iloc[0].capitalize()
        assert set(values["members"]) == {"mobilenetv2_a", "densenet121_b"}
        assert set(values["images"]) == set(rows["sop"])
        assert identity["checksum"] in " ".join(values["texts"].values())
        assert "not a diagnosis" in values["texts"]["Not for diagnosis"]
        # the tiny ensemble records no coverage: the CSV's warning is in the SR too
        assert rows["warning"].iloc[0] and values["texts"]["Why the verdict may not be meaningful"] == \
            rows["warning"].iloc[0]
        for number, capture in enumerate(captures):
            path = tmp_path / f"sc-{uid}-{number}.dcm"
            assert _dciodvfy_errors(capture, path) == []
            read = pydicom.dcmread(path)
            assert read.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSIS" in read.ImageComments
            assert read.pixel_array.shape[-1] == 3
            assert read.SourceImageSequence[0].ReferencedSOPInstanceUID in set(rows["sop"])
    # the listing and the next reading leave the result series out
    after = client.list_studies()
    assert dict(zip(after["study_uid"], after["n_images"])) == dict(zip(before["study_uid"], before["n_images"]))
    again = client.open_study(pacs.datasets[0].StudyInstanceUID)
    assert len(again.images) == 2 and {reason.split(" (")[0] for _, reason in again.skipped} == {"our own results"}


def test_cli_arguments_are_checked(capsys, tiny_weights):
    assert cli.main(["predict", "--pacs", "http://127.0.0.1:9/dicom-web", "--weights", str(tiny_weights)]) == 2
    assert cli.main(["predict", "--store-results", "x.png", "--weights", str(tiny_weights)]) == 2
    assert "--pacs URL with --study" in capsys.readouterr().err
    assert cli.main(["predict", "--pacs", "http://127.0.0.1:9/dicom-web", "--since", "2024-01-01",
                     "--weights", str(tiny_weights)]) == 2
    assert "expected a date as YYYYMMDD" in capsys.readouterr().err


# ----------------------------------------------------------------------- the dashboard and the PDF


def test_diagnose_page_lists_pacs_studies_without_patient_names(monkeypatch, pacs_env, tiny_weights):
    from tests.test_app import _app, _texts

    at = _app(monkeypatch, tiny_weights)
    assert not at.exception, [e.value for e in at.exception]
    assert [e.label for e in at.expander] == ["PACS"]
    listing = at.dataframe[0].value
    assert set(listing["accession"]) == {f"MURA-DEMO-00{i}" for i in (1, 2, 3)}
    page = _texts(at) + listing.to_csv() + " ".join(str(o) for s in at.selectbox for o in s.options)
    _no_identifier(page)

    uid = listing.loc[listing["accession"] == "MURA-DEMO-001", "study_uid"].iloc[0]
    at.selectbox(key="pacs_pick").set_value(uid).run()
    next(b for b in at.button if b.label == "Open from PACS").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = _texts(at)
    assert "Showing PACS study **MURA-DEMO-001**" in text
    assert "Abnormal (ensemble" in text or "Normal (ensemble" in text
    _no_identifier(text)
    assert "PDF" in {b.proto.label for b in at.get("download_button")}
    next(b for b in at.button if b.label == "Send the result to the PACS").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Stored in the PACS" in s.value for s in at.success), _texts(at)


def test_pdf_report_has_the_result_and_no_patient_name(pacs, tiny_weights):
    from pypdf import PdfReader

    from mura_core import reports
    from mura_core.ensemble import load_ensemble
    from mura_core.pdf_report import study_pdf

    ensemble = load_ensemble(tiny_weights)
    study = [ds for ds in pacs.datasets if ds.StudyInstanceUID == pacs.datasets[0].StudyInstanceUID]
    files = []
    for ds in study:
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    assert "Fictional" in str(pydicom.dcmread(io.BytesIO(files[0])).PatientName)  # the header has the name
    result = ensemble.predict_study(files, explain=True, method="gradcam", names=["named-after-patient.dcm"] * 2)
    pdf = study_pdf(result, installed.model_identity(tiny_weights),
                    reports.load_report(installed.report_path(tiny_weights)), "XR_HAND", "DICOM BodyPartExamined")
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert ("Abnormal (ensemble" in text) or ("Normal (ensemble" in text)
    assert f"{result.threshold:.3f}" in text and "threshold" in text
    for member in result.members:
        assert f"{member}" in text and f"{result.member_probabilities[member]:.3f}" in text
    assert f"{result.probability:.3f}" in text
    assert "not a diagnosis" in text and "Checksum: sha256:" in text and "AUC" in text
    # the radiographs and their heatmaps (fpdf2 stores identical pictures once: the tiny untrained models'
    # maps can be flat, so only a radiograph and one overlay per image are sure to differ)
    assert sum(len(page.images) for page in reader.pages) >= 2 * len(result.images)
    _no_identifier(text)
    assert "named-after-patient" not in text


def test_diagnose_page_with_a_pacs_that_is_down(monkeypatch, tiny_weights):
    from tests.test_app import _app

    monkeypatch.setenv("MURA_PACS_URL", f"http://127.0.0.1:{demo_pacs.free_port()}/dicom-web")
    monkeypatch.setenv("MURA_PACS_PASSWORD", "never-shown-7")
    at = _app(monkeypatch, tiny_weights)
    assert not at.exception, [e.value for e in at.exception]
    assert [e.label for e in at.expander] == ["PACS"]
    errors = [e.value for e in at.error]
    assert any("cannot be reached" in e for e in errors), errors
    assert not any("never-shown-7" in e for e in errors)
    assert any(b.label == "Try a sample study" for b in at.button)  # the other sources still work
