"""A real Orthanc on loopback with its own temporary config and storage, read via REST."""

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import requests
from pydicom import Dataset, dcmread

from tests.support.dcmtk import peer_env
from tests.support.ports import free_port, wait_for_port


@dataclass(frozen=True)
class OrthancTls:
    """Orthanc's DICOM port speaks TLS only (its Dicom Tls* settings)."""

    certificate: Path
    private_key: Path
    trusted_certificates: Path  # CAs of the callers' certificates
    require_client_certificate: bool = False

    def settings(self) -> dict[str, object]:
        return {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(self.certificate),
            "DicomTlsPrivateKey": str(self.private_key),
            "DicomTlsTrustedCertificates": str(self.trusted_certificates),
            "DicomTlsRemoteCertificateRequired": self.require_client_certificate,
        }


class Orthanc:
    """Owns one Orthanc process; `start()`/`stop()` may be called repeatedly on the same port."""

    ae_title = "ORTHANC"

    def __init__(
        self,
        workdir: Path,
        dicom_port: int | None = None,
        tls: OrthancTls | None = None,
        modalities: dict[str, dict[str, object]] | None = None,
    ) -> None:
        """`modalities`: Orthanc's DicomModalities (e.g. where it sends storage commitment
        reports: {"node": {"AET": ..., "Host": ..., "Port": ...}})."""
        self.workdir = workdir
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        # Orthanc overwrites an instance stored again, so its index shows each UID once; this
        # hook writes a line per C-STORE it accepted (asynchronously, after the response).
        self.store_log = workdir / "stored.txt"
        store_hook = workdir / "store_hook.lua"
        store_hook.write_text(
            "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
            f"  local log = io.open({json.dumps(str(self.store_log))}, 'a')\n"
            "  log:write(tags['SOPInstanceUID'] .. '\\n')\n"
            "  log:close()\n"
            "end\n"
        )
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "Name": "dicomnode-test-pacs",
                    "StorageDirectory": str(workdir / "storage"),
                    "IndexDirectory": str(workdir / "storage"),
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "DicomAet": self.ae_title,
                    "DicomCheckCalledAet": False,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "Plugins": [],
                    "DicomModalities": modalities or {},
                    "StorageCompression": False,
                    "OverwriteInstances": True,
                    "SaveJobs": False,
                    "StableAge": 1,
                    "LuaScripts": [str(store_hook)],
                    **(tls.settings() if tls else {}),
                },
                indent=2,
            )
        )

    def start(self) -> "Orthanc":
        log = open(self.workdir / "orthanc.log", "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            ["Orthanc", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=peer_env(),
        )
        wait_for_port(self.http_port)
        wait_for_port(self.dicom_port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/system", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"Orthanc REST did not answer at {self.url}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def get(self, path: str) -> requests.Response:
        response = requests.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response

    def instance_ids(self) -> list[str]:
        return self.get("/instances").json()

    def delete_instances(self) -> None:
        """Forget everything stored (to see what is sent next)."""
        for orthanc_id in self.instance_ids():
            requests.delete(f"{self.url}/instances/{orthanc_id}", timeout=30).raise_for_status()

    def sop_instance_uids(self) -> list[str]:
        """One entry per stored instance (a UID stored twice would appear twice)."""
        instances = self.get("/instances?expand").json()
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in instances]

    def store_counts(self) -> Counter[str]:
        """How many times each SOP Instance UID was stored, overwrites included (the hook runs
        after the C-STORE response: wait for the expected total before trusting it)."""
        lines = self.store_log.read_text().split() if self.store_log.exists() else []
        return Counter(lines)

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get(f"/instances/{orthanc_id}/file").content

    def datasets(self) -> dict[str, Dataset]:
        """Every stored instance, read back from Orthanc, by SOP Instance UID."""
        files = (dcmread(BytesIO(self.instance_file(i))) for i in self.instance_ids())
        return {str(ds.SOPInstanceUID): ds for ds in files}
