"""The PACS connection: DICOMweb search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS).

The operator configures it, never a browser user: `MURA_PACS_URL` (the DICOMweb root, e.g.
`http://127.0.0.1:8042/dicom-web`) and, when the PACS asks for them, `MURA_PACS_USER` and
`MURA_PACS_PASSWORD`, from the environment or from `.streamlit/secrets.toml` (same keys; the
environment wins). The password is never shown: not in `repr`, messages or logs.

Every failure is a `PacsError` whose message says what went wrong in words (the PACS is down or
does not answer in time, the credentials are refused, the study is gone, an instance is not an
image). Study listings keep accession number, date, description, body part, modality and number of
images only: no patient name, ID or birth date is read into them.
"""

from __future__ import annotations

import io
import os
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

PACS_URL_ENV, PACS_USER_ENV, PACS_PASSWORD_ENV = "MURA_PACS_URL", "MURA_PACS_USER", "MURA_PACS_PASSWORD"
SECRETS_FILE = Path(".streamlit") / "secrets.toml"
DEFAULT_TIMEOUT = 20.0
"""Seconds to wait for the PACS to connect and to answer one request."""
RADIOGRAPH_MODALITIES = ("CR", "DX")
"""The modalities taken by a search for radiograph studies (`find_radiograph_studies`)."""
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "SEG", "REG", "RWV", "PLAN", "AU", "ECG"})
STUDY_COLUMNS = ("study_uid", "accession", "date", "description", "body_part", "modality", "n_images")
"""The columns of a study listing: nothing that names the patient."""
_STUDY_FIELDS = ("StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyDescription", "ModalitiesInStudy",
                 "NumberOfStudyRelatedInstances")
_SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "BodyPartExamined", "SeriesDescription", "SeriesNumber",
                  "NumberOfSeriesRelatedInstances")


class PacsError(RuntimeError):
    """The PACS could not do what was asked; the message says why in words (never a password)."""


@dataclass(frozen=True)
class PacsConfig:
    """Where the PACS is and how to log in. `password` is left out of `repr`."""

    url: str
    user: str = ""
    password: str = field(default="", repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def shown_url(self) -> str:
        """The URL without any user or password written into it, for messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _secrets(paths: Sequence[Path]) -> dict:
    for path in paths:
        try:
            return tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return {}


def pacs_config(url: str | None = None, secrets_paths: Sequence[Path] | None = None) -> PacsConfig | None:
    """The configured PACS, or None when none is configured.

    Args:
        url: a DICOMweb root given explicitly (e.g. the CLI's `--pacs`); else `$MURA_PACS_URL`, else
            `MURA_PACS_URL` in `.streamlit/secrets.toml` (the working folder's, then the repository's).
        secrets_paths: the secrets files to read instead of those.

    Returns:
        A `PacsConfig` with the user and password from the environment or the secrets file.
    """
    if secrets_paths is None:
        secrets_paths = [Path.cwd() / SECRETS_FILE, Path(__file__).resolve().parent.parent / SECRETS_FILE]
    secrets = _secrets(secrets_paths)

    def setting(key: str) -> str:
        return str(os.environ.get(key) or secrets.get(key) or "").strip()

    url = (url or setting(PACS_URL_ENV)).strip().rstrip("/")
    if not url:
        return None
    return PacsConfig(url, setting(PACS_USER_ENV), setting(PACS_PASSWORD_ENV))


@dataclass
class PacsImage:
    """One image instance retrieved from the PACS: a display name, its UIDs and its DICOM file bytes."""

    name: str
    series_uid: str
    sop_uid: str
    data: bytes


@dataclass
class PacsStudy:
    """A study retrieved for prediction: its image instances and the instances left out (with why)."""

    uid: str
    accession: str
    date: str
    description: str
    images: list[PacsImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def files(self) -> tuple[tuple[str, bytes], ...]:
        """(name, bytes) per image: what `Ensemble.predict_study` and the dashboard take."""
        return tuple((image.name, image.data) for image in self.images)


def _value(item: dict, keyword: str) -> str:
    """A QIDO-RS JSON attribute as text ('' when absent); multi-valued ones joined by ','."""
    from pydicom.datadict import tag_for_keyword

    entry = item.get(f"{tag_for_keyword(keyword):08X}") or {}
    values = entry.get("Value") or []
    return ",".join(str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v) for v in values)


def _is_result_series(description: str) -> bool:
    from .dicom_results import RESULT_SERIES_PREFIX

    return description.startswith(RESULT_SERIES_PREFIX)


class PacsClient:
    """A DICOMweb client for one PACS (`dicomweb_client.DICOMwebClient` behind clear errors).

    Args:
        config: the PACS (see `pacs_config`).
    """

    def __init__(self, config: PacsConfig):
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.config = config
        session = requests.Session()
        if config.user:
            session.auth = (config.user, config.password)
        self._client = DICOMwebClient(config.url, session=session, timeout=config.timeout)
        # its default retries a refused connection five times with exponential waits (31 s): a PACS
        # that is down should be said at once
        self._client.set_http_retry_params(retry=False)

    @contextmanager
    def _errors(self, action: str, what: str = "") -> Iterator[None]:
        """Turn the HTTP library's errors into `PacsError`s that say what happened."""
        import requests

        where = f"the PACS at {self.config.shown_url}"
        try:
            yield
        except requests.exceptions.Timeout:
            raise PacsError(f"{where} did not answer within {self.config.timeout:.0f} s while {action}") from None
        except requests.exceptions.ConnectionError:
            raise PacsError(f"{where} cannot be reached while {action}: is it running, and is "
                            f"{PACS_URL_ENV} right?") from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsError(f"{where} refused the credentials (HTTP {status}) while {action}: check "
                                f"{PACS_USER_ENV} and {PACS_PASSWORD_ENV}") from None
            if status == 404:
                raise PacsError(f"{what or 'what was asked for'} is not on {where} (HTTP 404): it may have "
                                "been deleted") from None
            raise PacsError(f"{where} answered HTTP {status} while {action}") from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{where} failed while {action} ({type(exc).__name__})") from None

    def check(self) -> None:
        """Raise `PacsError` unless the PACS answers a search with these credentials."""
        with self._errors("checking the connection"):
            self._client.search_for_studies(limit=1, fields=["StudyInstanceUID"])

    def _series(self, study_uid: str) -> list[dict]:
        with self._errors("listing the study's series", f"study {study_uid}"):
            return self._client.search_for_series(study_uid, fields=list(_SERIES_FIELDS))

    def list_studies(self, accession: str = "", since: str = "", until: str = "",
                     modalities: Sequence[str] = (), limit: int = 200) -> pd.DataFrame:
        """Studies on the PACS, newest first, one row each with `STUDY_COLUMNS` (no patient identifier).

        Args:
            accession: keep studies whose accession number contains this text (case-insensitive; among
                the first `limit` studies that match the other filters).
            since, until: keep studies dated on or after / on or before these YYYYMMDD dates.
            modalities: keep studies with a series of one of these modalities (e.g. `RADIOGRAPH_MODALITIES`).
            limit: the most studies asked of the PACS.

        Returns:
            Columns study_uid, accession, date (YYYY-MM-DD), description, body_part, modality and
            n_images (image instances, our own result series left out).
        """
        filters = {}
        if since or until:
            filters["StudyDate"] = f"{since}-{until}"
        with self._errors("searching for studies"):
            found = self._client.search_for_studies(fields=list(_STUDY_FIELDS), search_filters=filters,
                                                    limit=limit, fuzzymatching=False)
        rows = []
        wanted = {m.upper() for m in modalities}
        for item in found:
            uid = _value(item, "StudyInstanceUID")
            if accession.strip().lower() not in _value(item, "AccessionNumber").lower():
                continue  # matched here: PACSs differ in how they apply QIDO wildcards
            series = [s for s in self._series(uid) if not _is_result_series(_value(s, "SeriesDescription"))]
            images = [s for s in series if _value(s, "Modality").upper() not in NON_IMAGE_MODALITIES]
            modality_set = sorted({_value(s, "Modality") for s in images if _value(s, "Modality")})
            if wanted and not wanted.intersection(modality_set):
                continue
            date = _value(item, "StudyDate")
            rows.append({
                "study_uid": uid,
                "accession": _value(item, "AccessionNumber"),
                "date": f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else date,
                "description": _value(item, "StudyDescription"),
                "body_part": ", ".join(sorted({_value(s, "BodyPartExamined") for s in images} - {""})),
                "modality": ", ".join(modality_set),
                "n_images": sum(int(_value(s, "NumberOfSeriesRelatedInstances") or 0) for s in images),
            })
        table = pd.DataFrame(rows, columns=list(STUDY_COLUMNS))
        return table.sort_values(["date", "accession"], ascending=False, kind="stable").reset_index(drop=True)

    def find_radiograph_studies(self, since: str) -> list[str]:
        """UIDs of every radiograph study (`RADIOGRAPH_MODALITIES`) dated `since` (YYYYMMDD) or later."""
        return list(self.list_studies(since=since, modalities=RADIOGRAPH_MODALITIES, limit=10000)["study_uid"])

    def open_study(self, study_uid: str) -> PacsStudy:
        """Retrieve a study's image instances as DICOM file bytes.

        Instances that are not images (a structured report, a document, our own result series)
        are left out and listed in `skipped` with the reason.

        Raises:
            PacsError: the study is not on the PACS, holds no image, or the PACS fails.
        """
        from pydicom import dcmwrite

        with self._errors("looking up the study", f"study {study_uid}"):
            found = self._client.search_for_studies(fields=list(_STUDY_FIELDS),
                                                    search_filters={"StudyInstanceUID": study_uid})
        if not found:
            raise PacsError(f"study {study_uid} is not on the PACS at {self.config.shown_url}: it may have "
                            "been deleted, or the UID is wrong")
        item = found[0]
        images, skipped = [], []
        for series in self._series(study_uid):
            series_uid, modality = _value(series, "SeriesInstanceUID"), _value(series, "Modality").upper()
            description = _value(series, "SeriesDescription")
            if _is_result_series(description):
                skipped.append((f"series {_value(series, 'SeriesNumber')}", f"our own results ({description})"))
                continue
            if modality in NON_IMAGE_MODALITIES:
                skipped.append((f"series {_value(series, 'SeriesNumber')}",
                                f"not an image (modality {modality})"))
                continue
            with self._errors("retrieving the study's images", f"series {series_uid} of study {study_uid}"):
                datasets = self._client.retrieve_series(study_uid, series_uid)
            for ds in sorted(datasets, key=lambda d: int(d.get("InstanceNumber") or 0)):
                name = f"series{ds.get('SeriesNumber', '') or ''}-image{ds.get('InstanceNumber', '') or ''}.dcm"
                if "PixelData" not in ds:
                    skipped.append((name, f"not an image (no pixel data; SOP class {ds.get('SOPClassUID', '?')})"))
                    continue
                buffer = io.BytesIO()
                dcmwrite(buffer, ds, enforce_file_format=True)
                images.append(PacsImage(name, series_uid, str(ds.SOPInstanceUID), buffer.getvalue()))
        if not images:
            reasons = "; ".join(f"{n}: {r}" for n, r in skipped) or "it has no instances"
            raise PacsError(f"study {study_uid} holds no image to read ({reasons})")
        date = _value(item, "StudyDate")
        return PacsStudy(study_uid, _value(item, "AccessionNumber"), date, _value(item, "StudyDescription"),
                         images, skipped)

    def store_result(self, result, sources: Sequence[bytes], identity) -> int:
        """Store a study's result in it: the SR and the heatmap captures of `dicom_results.result_datasets`.

        Args:
            result: the study's `StudyResult`.
            sources: the DICOM bytes of the instances it read, in the result's image order.
            identity: the installed model's name, version and checksum (`installed.model_identity`).

        Returns:
            How many instances were stored (the SR first, then one capture per image).

        Raises:
            PacsError: as `store`; ValueError: the result cannot be written as DICOM.
        """
        import pydicom

        from .dicom_results import result_datasets

        datasets = result_datasets(result, [pydicom.dcmread(io.BytesIO(data)) for data in sources], identity)
        self.store(datasets)
        return len(datasets)

    def store(self, datasets: Sequence) -> None:
        """Store DICOM datasets (one study's results) in one STOW-RS request.

        Everything is built before this call, so nothing is sent half-made; the PACS's answer is
        checked instance by instance.

        Raises:
            PacsError: the PACS is unreachable, refused the request, or failed some instances (named).
        """
        if not datasets:
            return
        for ds in datasets:  # dicomweb-client writes the preamble only when the dataset has one
            if getattr(ds, "preamble", None) is None:
                ds.preamble = b"\0" * 128
        with self._errors("storing the results"):
            answer = self._client.store_instances(list(datasets))
        failed = answer.get("FailedSOPSequence") or []
        if failed:
            uids = ", ".join(str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed)
            raise PacsError(f"the PACS at {self.config.shown_url} refused {len(failed)} of {len(datasets)} "
                            f"result instances ({uids})")
