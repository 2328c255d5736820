"""The GCP test bench: the Compute fake (``tests/gcp/compute_fake``) in this process, the GCS
emulator (behind its precondition layer) for the example's state, the example spec in a
working directory, the CLI as a subprocess pointed at the fake, and a census
of everything our lineage owns, listed collection by collection.

The fake's instances run nothing, so the Serve half of ``examples/gcp`` cannot be applied here:
the bench's copy of the example leaves out its ``serve:`` section.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import json_events, run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gcp" / "cluster.yaml"
REGION, ZONE = "us-central1", "us-central1-a"
# Collections by their URL paths (regional and global ones share names).
COLLECTIONS = tuple(
    [f"global/{c}" for c in ("firewalls", "instanceTemplates", "healthChecks",
                             "backendServices", "urlMaps", "targetHttpProxies",
                             "forwardingRules")]
    + [f"regions/{REGION}/{c}" for c in ("addresses", "instanceGroupManagers",
                                         "backendServices", "forwardingRules", "healthChecks")]
    + [f"zones/{ZONE}/{c}" for c in ("instances", "instanceGroupManagers", "instanceGroups")])


STATE_KEY = "gcpdemo/state.json"  # the example's state.key


@dataclass
class GcpBench:
    fake: Any  # tests.gcp.compute_fake.FakeCompute
    gcs: Any  # tests.checkpoint.servers.GcsServer: the example's state lives there

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLOUDSDK_", "GOOGLE_", "STORAGE_EMULATOR"))}
        env.update(self.gcs.env)
        env.update(CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=f"{self.fake.endpoint}/compute/v1/",
                   PROVISIONER_GCP_CREDENTIALS="anonymous")
        return env

    def variables(self, **extra: Any) -> dict[str, Any]:
        """The example's variables, with a new bucket for its state."""
        bucket = f"gcp-{uuid.uuid4().hex[:12]}"
        self.gcs.create_bucket(bucket)
        return {"project": self.fake.project, "region": REGION, "zone": ZONE,
                "operator_cidr": "127.0.0.1/32", "bucket": bucket, **extra}

    def state(self, workdir: Path) -> dict[str, Any]:
        """The state document as stored in the example's GCS state object."""
        bucket = json.loads((workdir / "gcp.json").read_text())["bucket"]
        return json.loads(self.gcs.client().bucket(bucket).blob(STATE_KEY).download_as_bytes())

    def get(self, path: str) -> dict[str, Any]:
        """GET ``/compute/v1/projects/<project>/<path>`` from the fake, as a client would."""
        import urllib.request

        url = f"{self.fake.endpoint}/compute/v1/projects/{self.fake.project}/{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def items(self, path: str) -> list[dict[str, Any]]:
        found, token = [], ""
        while True:
            page = self.get(f"{path}?maxResults=500" + (f"&pageToken={token}" if token else ""))
            found += page.get("items") or []
            token = page.get("nextPageToken")
            if not token:
                return found

    def census(self, lineage: str) -> dict[str, list[str]]:
        """Everything whose description or labels carry ``lineage`` (worker instances carry
        the labels of their template), by collection path."""
        self.fake.finish_operations()
        return {path: sorted(item["name"] for item in self.items(path)
                             if lineage in str(item.get("description") or "")
                             or (item.get("labels") or {}).get("provisioner-lineage") == lineage)
                for path in COLLECTIONS}


def empty_census() -> dict[str, list[str]]:
    return {path: [] for path in COLLECTIONS}


def write_workdir(directory: Path, variables: dict[str, Any]) -> Path:
    """The example without ``serve:`` and its variables in ``directory``."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.pop("serve", None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cluster.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (directory / "gcp.json").write_text(json.dumps(variables))
    return directory


def cli(workdir: Path, bench: GcpBench, *args: str, timeout: float = 300
        ) -> subprocess.CompletedProcess:
    return run_cli(workdir, bench.env, *args, "--var-file", "gcp.json", timeout=timeout)


events = json_events
