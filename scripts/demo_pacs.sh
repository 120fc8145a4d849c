#!/usr/bin/env bash
# A demo PACS in one command: Orthanc (Debian packages orthanc, orthanc-dicomweb) on 127.0.0.1 with the
# installed ensemble's sample studies as DICOM; prints the MURA_PACS_URL to use. Ctrl-C stops it.
#   ./scripts/demo_pacs.sh [--port 8042] [--dir FOLDER] [--weights FOLDER] [--user U --password P]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m mura_core.demo_pacs "$@"
