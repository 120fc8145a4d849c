"""A demonstration PACS: Orthanc with its DICOMweb plugin on 127.0.0.1, holding the sample studies as DICOM.

    python -m mura_core.demo_pacs [--port 8042] [--dir FOLDER] [--weights FOLDER] [--user U --password P]

(`scripts/demo_pacs.sh` runs this.) It writes Orthanc's configuration into FOLDER, starts the
`Orthanc` binary (Debian packages `orthanc` and `orthanc-dicomweb`) as the current user, loopback only,
uploads the installed ensemble's sample studies converted to DICOM (`sample_studies_as_dicom`: a
made-up accession number, study date and a fictional patient name, so that the product's rule never to
show or export patient identifiers is exercised), prints the `MURA_PACS_URL` to use and runs until
Ctrl-C. The tests start the same server through `start_orthanc`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .body_parts import normalize_body_part

DEMO_PATIENT_NAME = "Fictional^Demo Patient"
"""The made-up patient name the demo studies carry; no output of the product may show it."""
DEMO_PATIENT_ID = "MURA-DEMO-PATIENT-0001"
DICOMWEB_PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                         "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")
_CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
# MURA codes and FracAtlas' extra parts -> DICOM BodyPartExamined defined terms (PS3.16 CID 4031)
_DICOM_TERMS = {"XR_ELBOW": "ELBOW", "XR_FINGER": "FINGER", "XR_FOREARM": "FOREARM", "XR_HAND": "HAND",
                "XR_HUMERUS": "HUMERUS", "XR_SHOULDER": "SHOULDER", "XR_WRIST": "WRIST"}


class OrthancError(RuntimeError):
    """Orthanc is not installed, or did not start; the message says why and what to do."""


@dataclass
class OrthancServer:
    """A running Orthanc: its process, DICOMweb URL and folder (configuration, storage, log)."""

    process: subprocess.Popen
    url: str  # the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web
    folder: Path
    user: str = ""
    password: str = ""

    def stop(self) -> None:
        """Stop the server (it finishes its writes first) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def orthanc_binary() -> str:
    """The `Orthanc` executable, or raise `OrthancError` saying how to install it."""
    found = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if os.access(p, os.X_OK)), None)
    if not found:
        raise OrthancError("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    return found


def dicomweb_plugin() -> str:
    """The Orthanc DICOMweb plugin's shared library, or raise `OrthancError`."""
    for path in DICOMWEB_PLUGIN_PATHS:
        if Path(path).is_file():
            return path
    raise OrthancError("Orthanc's DICOMweb plugin is not installed: apt-get install orthanc-dicomweb")


def orthanc_config(folder: Path, port: int, user: str = "", password: str = "") -> dict:
    """Orthanc's configuration: HTTP on 127.0.0.1:`port` only, no DICOM port, storage in `folder`,
    DICOMweb on, and HTTP basic authentication when `user` is given."""
    return {
        "Name": "MURA demo PACS",
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # loopback only
        "DicomServerEnabled": False,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "AuthenticationEnabled": bool(user),
        "RegisteredUsers": {user: password} if user else {},
        "HttpTimeout": 30,
        "StableAge": 1,
    }


def start_orthanc(folder: str | os.PathLike, port: int | None = None, user: str = "", password: str = "",
                  timeout: float = 60.0) -> OrthancServer:
    """Write the configuration into `folder` and start Orthanc; return once its DICOMweb API answers.

    Raises:
        OrthancError: Orthanc or its plugin is missing, or it exited or did not answer in `timeout` s
            (the message quotes the end of its log).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(folder, port, user, password), indent=2))
    config.chmod(0o600)  # it holds the password
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([orthanc_binary(), str(config)], stdout=log, stderr=subprocess.STDOUT,
                               cwd=folder, start_new_session=True)
    log.close()
    server = OrthancServer(process, f"http://127.0.0.1:{port}/dicom-web", folder, user, password)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OrthancError(f"Orthanc exited at start (status {process.returncode}): {_log_tail(folder)}")
        if _answers(server):
            return server
        time.sleep(0.2)
    server.stop()
    raise OrthancError(f"Orthanc did not answer on port {port} within {timeout:.0f} s: {_log_tail(folder)}")


def _answers(server: OrthancServer) -> bool:
    request = urllib.request.Request(f"{server.url}/studies?limit=1")
    if server.user:
        token = b64encode(f"{server.user}:{server.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(folder: Path, lines: int = 8) -> str:
    try:
        return " | ".join((folder / "orthanc.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def sample_studies_as_dicom(weights: str | os.PathLike, seed: int = 0) -> list:
    """The sample studies of a weights folder as CR DICOM datasets, one study per sample study.

    Each study gets a made-up accession number (`MURA-DEMO-<n>`), study date and the fictional
    `DEMO_PATIENT_NAME`; each image its body part (as a DICOM defined term) and the pixels the
    product decodes from the sample file. Samples that cannot be decoded are left out.

    Returns:
        pydicom `Dataset`s (with file meta, ready to store or write).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from .imaging import ImageLoadError, load_image
    from .installed import read_samples

    samples, _ = read_samples(weights)
    datasets = []
    base = datetime.date(2024, 3, 1)
    for number, (study, rows) in enumerate(samples.groupby("study", sort=False), start=1):
        study_uid, series_uid = generate_uid(), generate_uid()
        date = (base + datetime.timedelta(days=7 * number)).strftime("%Y%m%d")
        part = normalize_body_part(rows["body_part"].iloc[0])
        term = _DICOM_TERMS.get(part, part.removeprefix("XR_"))
        instance = 0
        for path in rows["path"]:
            try:
                pixels = load_image(path)
            except ImageLoadError:
                continue
            instance += 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = _CR_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = _CR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
            ds.PatientName, ds.PatientID = DEMO_PATIENT_NAME, DEMO_PATIENT_ID
            ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
            ds.AccessionNumber = f"MURA-DEMO-{number:03d}"
            ds.StudyID, ds.ReferringPhysicianName = str(number), ""
            ds.StudyDescription = f"XR {term.title()} (demo: {study})"
            ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", term, ""
            ds.SeriesNumber, ds.InstanceNumber = 1, instance
            ds.Manufacturer = "MURA demo PACS (converted sample image)"
            ds.PatientOrientation = ""
            ds.ImageType = ["DERIVED", "PRIMARY"]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = pixels.shape
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
            datasets.append(ds)
    return datasets


def upload(server: OrthancServer, datasets: list) -> None:
    """Store `datasets` in the server through STOW-RS (`mura_core.pacs`)."""
    from .pacs import PacsClient, PacsConfig

    PacsClient(PacsConfig(server.url, server.user, server.password)).store(datasets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mura_core.demo_pacs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1 (default 8042)")
    parser.add_argument("--dir", default=os.path.join(os.path.expanduser("~"), ".cache", "mura-demo-pacs"),
                        help="folder for Orthanc's configuration, storage and log (emptied first)")
    parser.add_argument("--weights", help="weights folder whose samples/ to upload (default: the installed one)")
    parser.add_argument("--user", default="", help="require HTTP basic authentication with this user")
    parser.add_argument("--password", default="")
    args = parser.parse_args(argv)
    from .installed import weights_folder

    folder = Path(args.dir)
    shutil.rmtree(folder / "storage", ignore_errors=True)
    # `kill` or `timeout` stop the server too, not only Ctrl-C (Orthanc runs in its own session)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server = start_orthanc(folder, args.port, args.user, args.password)
    except OrthancError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        datasets = sample_studies_as_dicom(weights_folder(args.weights))
        upload(server, datasets)
        studies = len({ds.StudyInstanceUID for ds in datasets})
        print(f"Orthanc is running (log: {folder / 'orthanc.log'}) with {studies} sample studies, "
              f"{len(datasets)} images.")
        print(f"export MURA_PACS_URL={server.url}")
        if args.user:
            print("export MURA_PACS_USER=... MURA_PACS_PASSWORD=...  (the ones you passed)")
        print("Then: streamlit run app.py   or   python -m mura_core predict --pacs $MURA_PACS_URL "
              "--since 20240101 --out predictions.csv.  Ctrl-C stops the server.", flush=True)
        server.process.wait()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
