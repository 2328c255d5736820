"""Bad input -> the SpecError a user sees: one row per case (files, flags, expected fragments).

Every row checks that the error is a SpecError (never a pydantic or YAML error), names the
expected key path, and contains the expected fragments; ``absent`` lists text that must not
appear (the values of sensitive variables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.errors import SpecError
from provisioner.spec import load_spec

from .helpers import BASE_SPEC, SERVE_YAML, write_tree

SECRET = "hunter2-very-secret"


@dataclass
class Bad:
    id: str
    spec: str
    fragments: list[str]
    path: str | None = None  # expected SpecError.path; "" = must be None
    source: str | None = "cluster.yaml"
    files: dict[str, str] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)


WITH_SERVE = BASE_SPEC + "serve:\n  manifest: serve.yaml\n"
GCP_SPEC = ("version: 1\nname: g1\nprovider: gcp\ncluster:\n  project: p-1\n  region: us-central1\n"
            "  zone: us-central1-a\n  image: img\n  operator_cidr: 10.0.0.0/8\n")
AWS_SPEC = ("version: 1\nname: a1\nprovider: aws\ncluster:\n  region: us-east-1\n  vpc_id: vpc-1\n"
            "  subnets: [subnet-a, subnet-b]\n  image_id: ami-1\n  operator_cidr: 10.0.0.0/8\n")
APP_DIR = {"app/": ""}


def manifest_case(id: str, serve_yaml: str, fragments: list[str], path: str | None, **kw) -> Bad:
    files = {"serve.yaml": serve_yaml, **APP_DIR, **kw.pop("files", {})}
    return Bad(id, WITH_SERVE, fragments, path=path, source="serve.yaml", files=files, **kw)


CASES = [
    # -- YAML itself -----------------------------------------------------------------------
    Bad("yaml-unclosed-flow", "version: 1\nname: q\ncluster: {gcs_port: 1\n", ["invalid YAML", "line 4"], path=""),
    Bad("yaml-bad-indent", "version: 1\nname: q\n  provider: local\n", ["invalid YAML at line 3"], path=""),
    Bad("yaml-tab", "version: 1\ncluster:\n\tgcs_port: 1\n", ["invalid YAML at line 3"], path=""),
    Bad("yaml-duplicate-key", BASE_SPEC + "name: again\n", ["duplicate key 'name'", "line 4"], path=""),
    Bad("not-a-mapping", "- version: 1\n", ["expected a mapping of spec keys", "got a list"], path=""),
    Bad("empty-file", "", ["expected a mapping of spec keys", "got null"], path=""),
    # -- top level ---------------------------------------------------------------------------
    Bad("unknown-top-key", BASE_SPEC + "varaibles: {}\n", ["unknown key 'varaibles'", "did you mean 'variables'?", "line 4"], path="varaibles"),
    Bad("unknown-top-key-far", BASE_SPEC + "zzz: 1\n", ["unknown key 'zzz'"], path="zzz"),
    Bad("missing-version", "name: q1\nprovider: local\n", ["is required"], path="version"),
    Bad("version-2", "version: 2\nname: q1\nprovider: local\n", ["unsupported spec version 2", "reads version 1"], path="version"),
    Bad("version-string", "version: '1'\nname: q1\nprovider: local\n", ["unsupported spec version '1'"], path="version"),
    Bad("missing-provider", "version: 1\nname: q1\n", ["is required; one of: ", "local, memory"], path="provider"),
    Bad("unknown-provider", "version: 1\nname: q1\nprovider: loacl\n", ["unknown provider 'loacl'", "did you mean 'local'?"], path="provider"),
    Bad("missing-name", "version: 1\nprovider: local\n", ["is required"], path="name"),
    Bad("bad-name-upper", "version: 1\nname: Quick\nprovider: local\n", ["lowercase", "got 'Quick'"], path="name"),
    Bad("bad-name-trailing-dash", "version: 1\nname: quick-\nprovider: local\n", ["lowercase"], path="name"),
    Bad("bad-name-too-long", f"version: 1\nname: {'a' * 41}\nprovider: local\n", ["2-40"], path="name"),
    Bad("name-not-string", "version: 1\nname: 12\nprovider: local\n", ["expected a string, got 12"], path="name"),
    Bad("state-backend-unknown", BASE_SPEC + "state: {backend: azure}\n", ["expected 'local', 's3' or 'gcs'", "got 'azure'"], path="state.backend"),
    Bad("state-s3-without-bucket", BASE_SPEC + "state: {backend: s3}\n", ["is required when state.backend is s3"], path="state.bucket"),
    Bad("state-s3-with-path", BASE_SPEC + "state: {backend: s3, bucket: tfstate, path: s.json}\n", ["applies to state.backend local only"], path="state.path"),
    Bad("state-bucket-with-local", BASE_SPEC + "state: {bucket: tfstate}\n", ["applies to state.backend s3 and gcs only", "state.backend is local"], path="state.bucket"),
    Bad("state-gcs-without-bucket", BASE_SPEC + "state: {backend: gcs, project: my-project}\n", ["is required when state.backend is gcs"], path="state.bucket"),
    Bad("state-gcs-with-path", BASE_SPEC + "state: {backend: gcs, bucket: tfstate, path: s.json}\n", ["applies to state.backend local only", "with s3 and gcs the state is the object state.key"], path="state.path"),
    Bad("state-gcs-with-region", BASE_SPEC + "state: {backend: gcs, bucket: tfstate, region: europe-west1}\n", ["applies to state.backend s3 only", "state.backend is gcs"], path="state.region"),
    Bad("state-project-with-s3", BASE_SPEC + "state: {backend: s3, bucket: tfstate, project: my-project}\n", ["applies to state.backend gcs only", "state.backend is s3"], path="state.project"),
    Bad("state-gcs-bucket-is-a-uri", BASE_SPEC + "state: {backend: gcs, bucket: 'gs://tfstate/x'}\n", ["expected a Cloud Storage bucket name", "got 'gs://tfstate/x'"], path="state.bucket"),
    Bad("state-gcs-bucket-goog", BASE_SPEC + "state: {backend: gcs, bucket: google-state}\n", ["expected a Cloud Storage bucket name"], path="state.bucket"),
    Bad("state-gcs-project-bad", BASE_SPEC + "state: {backend: gcs, bucket: tfstate, project: My Project}\n", ["expected a project id"], path="state.project"),
    Bad("state-bucket-is-a-uri", BASE_SPEC + "state: {backend: s3, bucket: 's3://tfstate/x'}\n", ["expected an S3 bucket name", "got 's3://tfstate/x'"], path="state.bucket"),
    Bad("state-key-absolute", BASE_SPEC + "state: {backend: s3, bucket: tfstate, key: /x/state.json}\n", ["expected an object key"], path="state.key"),
    Bad("state-region-bad", BASE_SPEC + "state: {backend: s3, bucket: tfstate, region: US East}\n", ["expected a region name"], path="state.region"),
    Bad("state-unknown-key", BASE_SPEC + "state: {pth: x.json}\n", ["unknown key 'pth'", "did you mean 'path'?"], path="state.pth"),
    Bad("outputs-not-map", BASE_SPEC + "outputs: [a]\n", ["expected a mapping, got a list"], path="outputs"),
    Bad("module-missing", BASE_SPEC + "module: ./nope\n", ["module directory nope not found"], path="module"),
    # -- local cluster settings -------------------------------------------------------------
    Bad("cluster-unknown-key", BASE_SPEC + "cluster:\n  dashbord_port: 8266\n", ["unknown key 'dashbord_port'", "did you mean 'dashboard_port'?", "line 5"], path="cluster.dashbord_port"),
    Bad("cluster-wrong-type", BASE_SPEC + "cluster:\n  dashboard_port: abc\n", ["expected an integer, got 'abc'", "line 5"], path="cluster.dashboard_port"),
    Bad("cluster-string-number", BASE_SPEC + "cluster:\n  gcs_port: '6379'\n", ["expected an integer, got '6379'"], path="cluster.gcs_port"),
    Bad("cluster-bool-port", BASE_SPEC + "cluster:\n  gcs_port: true\n", ["expected an integer, got true"], path="cluster.gcs_port"),
    Bad("cluster-port-range", BASE_SPEC + "cluster:\n  gcs_port: 70000\n", ["must be at most 65535, got 70000"], path="cluster.gcs_port"),
    Bad("cluster-port-zero", BASE_SPEC + "cluster:\n  gcs_port: 0\n", ["must be at least 1, got 0"], path="cluster.gcs_port"),
    Bad("cluster-port-clash", BASE_SPEC + "cluster:\n  dashboard_port: 6379\n", ["port 6379 is already used by gcs_port"], path="cluster.dashboard_port"),
    Bad("cluster-bad-ip", BASE_SPEC + "cluster:\n  node_ip: localhost\n", ["expected an IP address, got 'localhost'"], path="cluster.node_ip"),
    Bad("cluster-not-map", BASE_SPEC + "cluster: 5\n", ["expected a mapping, got 5"], path="cluster"),
    Bad("cluster-two-errors", BASE_SPEC + "cluster:\n  gcs_port: x\n  num_cpus: y\n", ["gcs_port", "also cluster.num_cpus: expected an integer"], path="cluster.gcs_port"),
    # -- memory cluster settings ------------------------------------------------------------
    Bad("memory-missing-name", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - count: 2\n", ["is required"], path="cluster.resources[0].name"),
    Bad("memory-unknown-key", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - name: a\n      dependson: [b]\n", ["unknown key 'dependson'", "did you mean 'depends_on'?"], path="cluster.resources[0].dependson"),
    Bad("memory-bad-group-name", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - name: Web-1\n", ["must match the pattern"], path="cluster.resources[0].name"),
    Bad("memory-unknown-dep", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - name: a\n    - name: b\n      depends_on: [c]\n", ["unknown group 'c'", "groups: a, b"], path="cluster.resources[1].depends_on[0]"),
    Bad("memory-cycle", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - {name: a, depends_on: [b]}\n    - {name: b, depends_on: [a]}\n", ["dependency cycle: a -> b -> a"], path="cluster.resources[0].depends_on"),
    Bad("memory-duplicate", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - {name: a}\n    - {name: a}\n", ["group name 'a' is already used by resources[0]"], path="cluster.resources[1].name"),
    Bad("memory-negative-delay", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - {name: a, delay_s: -1}\n", ["must be at least 0, got -1"], path="cluster.resources[0].delay_s"),
    # -- aws cluster settings ---------------------------------------------------------------
    Bad("aws-missing-vpc", AWS_SPEC.replace("  vpc_id: vpc-1\n", ""), ["is required"], path="cluster.vpc_id"),
    Bad("aws-bad-cidr", AWS_SPEC.replace("10.0.0.0/8", "10.0.0.0/88"), ["expected a CIDR block"], path="cluster.operator_cidr"),
    Bad("aws-desired-above-max", AWS_SPEC + "  workers: {min_size: 1, max_size: 3, desired_capacity: 5}\n", ["between min_size (1) and max_size (3), not 5"], path="cluster.workers.desired_capacity"),
    Bad("aws-alb-one-subnet", AWS_SPEC.replace("[subnet-a, subnet-b]", "[subnet-a]"), ["needs subnets in two zones"], path="cluster.subnets"),
    Bad("aws-head-subnet-elsewhere", AWS_SPEC + "  head: {subnet: subnet-z}\n", ["'subnet-z' is not one of subnets"], path="cluster.head.subnet"),
    Bad("aws-elb-lb-type", AWS_SPEC + "  lb: {type: classic}\n", ["'application'", "'network'"], path="cluster.lb.type"),
    Bad("aws-serve-without-s3", AWS_SPEC + "serve:\n  manifest: serve.yaml\n", ["Serve code must reach the nodes through S3", "package_store"], path="cluster.package_store", files={"serve.yaml": SERVE_YAML, **APP_DIR}),
    Bad("aws-package-store-not-s3", AWS_SPEC + "  package_store: gs://b/p\n", ["expected s3://bucket/prefix"], path="cluster.package_store"),
    # -- gcp cluster settings ---------------------------------------------------------------
    Bad("gcp-missing-project", GCP_SPEC.replace("  project: p-1\n", ""), ["is required"], path="cluster.project"),
    Bad("gcp-zone-elsewhere", GCP_SPEC.replace("zone: us-central1-a", "zone: europe-west1-b"), ["'europe-west1-b' is not a zone of region 'us-central1'"], path="cluster.zone"),
    Bad("gcp-lb-port", GCP_SPEC + "  lb: {listen_port: 443}\n", ["80", "8080"], path="cluster.lb.listen_port"),
    Bad("gcp-serve-without-gcs", GCP_SPEC + "serve:\n  manifest: serve.yaml\n  checkpoint_store: s3://b/p\n", ["through Cloud Storage", "gs://bucket/prefix"], path="cluster.package_store", files={"serve.yaml": SERVE_YAML, **APP_DIR}),
    # -- variable declarations --------------------------------------------------------------
    Bad("var-decl-bad-type", BASE_SPEC + "variables:\n  port: {type: integer}\n", ["expected 'string', 'number', 'bool', 'list', 'map' or 'any'", "got 'integer'"], path="variables.port.type"),
    Bad("var-decl-unknown-key", BASE_SPEC + "variables:\n  port: {defualt: 1}\n", ["unknown key 'defualt'", "did you mean 'default'?"], path="variables.port.defualt"),
    Bad("var-decl-bad-name", BASE_SPEC + "variables:\n  my-port: {}\n", ["must match the pattern"], path="variables.my-port"),
    Bad("var-decl-validation-key", BASE_SPEC + "variables:\n  port: {validation: {minimum: 1}}\n", ["unknown key 'minimum'", "did you mean 'min'?"], path="variables.port.validation.minimum"),
    Bad("var-decl-bad-regex", BASE_SPEC + "variables:\n  tag: {type: string, validation: {pattern: '[a-'}}\n", ["expected a valid regular expression"], path="variables.tag.validation.pattern"),
    Bad("var-decl-min-on-string", BASE_SPEC + "variables:\n  tag: {type: string, validation: {min: 1}}\n", ["min/max apply to numbers"], path="variables.tag.validation"),
    Bad("var-decl-min-gt-max", BASE_SPEC + "variables:\n  n: {type: number, validation: {min: 5, max: 1}}\n", ["min (5) is greater than max (1)"], path="variables.n.validation.min"),
    Bad("var-default-wrong-type", BASE_SPEC + "variables:\n  port: {type: number, default: eighty}\n", ["variable 'port' (from default): expected a number, got 'eighty'"], path="variables.port.default"),
    Bad("var-default-fails-validation", BASE_SPEC + "variables:\n  port: {type: number, default: 80, validation: {min: 1024}}\n", ["variable 'port' (from default): must be at least 1024 (got 80)"], path="variables.port.default"),
    # -- variable values ----------------------------------------------------------------------
    Bad("var-required", BASE_SPEC + "variables:\n  region: {type: string}\n", ["variable 'region' is required"], path="variables.region"),
    Bad("var-undeclared-flag", BASE_SPEC + "variables:\n  a: {default: 1}\n  b: {default: 2}\n", ["variable 'x' is not declared in cluster.yaml; declared: a, b"], path="x", source="--var", order=[("var", "x=1")]),
    Bad("var-undeclared-close", BASE_SPEC + "variables:\n  region: {default: x}\n", ["did you mean 'region'?"], path="regoin", source="--var", order=[("var", "regoin=eu")]),
    Bad("var-undeclared-file", BASE_SPEC + "variables:\n  a: {default: 1}\n", ["variable 'zone' is not declared", "declared: a"], path="zone", source="prod.yaml", files={"prod.yaml": "zone: x\n"}, order=[("file", "prod.yaml")]),
    Bad("var-flag-no-equals", BASE_SPEC + "variables:\n  a: {default: 1}\n", ["--var expects NAME=VALUE"], source="--var", order=[("var", "a")]),
    Bad("var-flag-not-number", BASE_SPEC + "variables:\n  port: {type: number}\n", ["variable 'port' (from --var): expected a number, got 'abc'"], path="port", source="--var", order=[("var", "port=abc")]),
    Bad("var-flag-not-bool", BASE_SPEC + "variables:\n  debug: {type: bool}\n", ["expected true, false, 1 or 0", "got 'yes'"], path="debug", source="--var", order=[("var", "debug=yes")]),
    Bad("var-flag-not-list", BASE_SPEC + "variables:\n  zones: {type: list}\n", ["expected a list", "got 'a'"], path="zones", source="--var", order=[("var", "zones=a")]),
    Bad("var-flag-not-map", BASE_SPEC + "variables:\n  tags: {type: map}\n", ["expected a mapping", "got '[1]'"], path="tags", source="--var", order=[("var", "tags=[1]")]),
    Bad("var-env-not-number", BASE_SPEC + "variables:\n  port: {type: number}\n", ["variable 'port' (from environment (PROVISIONER_VAR_port)): expected a number, got 'x1'"], path="PROVISIONER_VAR_port", source="environment", env={"PROVISIONER_VAR_port": "x1"}),
    Bad("var-file-wrong-type", BASE_SPEC + "variables:\n  port: {type: number}\n", ["variable 'port' (from --var-file prod.yaml): expected a number, got '8000'"], path="port", source="prod.yaml", files={"prod.yaml": "port: '8000'\n"}, order=[("file", "prod.yaml")]),
    Bad("var-file-string-got-number", BASE_SPEC + "variables:\n  tag: {type: string}\n", ["expected a string (quote it to make it a string), got 1.1"], path="tag", source="prod.yaml", files={"prod.yaml": "tag: 1.10\n"}, order=[("file", "prod.yaml")]),
    Bad("var-file-missing", BASE_SPEC + "variables:\n  a: {default: 1}\n", ["var file not found"], source="nope.yaml", order=[("file", "nope.yaml")]),
    Bad("var-file-not-mapping", BASE_SPEC + "variables:\n  a: {default: 1}\n", ["must be a mapping of variable names"], source="v.yaml", files={"v.yaml": "- a\n"}, order=[("file", "v.yaml")]),
    Bad("var-file-bad-yaml", BASE_SPEC + "variables:\n  a: {default: 1}\n", ["invalid YAML at line 3"], source="v.yaml", files={"v.yaml": "a: 1\nb: [\n"}, order=[("file", "v.yaml")]),
    Bad("var-file-bad-json", BASE_SPEC + "variables:\n  a: {default: 1}\n", ["invalid JSON at line 1"], source="v.json", files={"v.json": "{\"a\": }"}, order=[("file", "v.json")]),
    Bad("var-validation-message", BASE_SPEC + "variables:\n  port: {type: number, validation: {min: 1024, message: must be an unprivileged port}}\n", ["variable 'port' (from --var): must be an unprivileged port (got 80)"], path="port", source="--var", order=[("var", "port=80")]),
    Bad("var-validation-pattern", BASE_SPEC + "variables:\n  env: {type: string, validation: {pattern: '^[a-z]+$'}}\n", ["must match the pattern ^[a-z]+$", "(got 'Prod1')"], path="env", source="--var", order=[("var", "env=Prod1")]),
    Bad("var-validation-one-of", BASE_SPEC + "variables:\n  env: {validation: {one_of: [dev, prod]}}\n", ["must be one of 'dev', 'prod'"], path="env", source="prod.yaml", files={"prod.yaml": "env: test\n"}, order=[("file", "prod.yaml")]),
    Bad("var-validation-max-env", BASE_SPEC + "variables:\n  n: {type: number, validation: {max: 4}}\n", ["must be at most 4 (got 5)", "PROVISIONER_VAR_n"], path="PROVISIONER_VAR_n", source="environment", env={"PROVISIONER_VAR_n": "5"}),
    # -- interpolation ------------------------------------------------------------------------
    Bad("interp-unknown-var", BASE_SPEC + "variables:\n  port: {default: 1}\ncluster:\n  dashboard_port: ${var.prot}\n", ["unknown variable 'prot'", "did you mean 'port'?"], path="cluster.dashboard_port"),
    Bad("interp-unknown-in-list", "version: 1\nname: m1\nprovider: memory\ncluster:\n  resources:\n    - name: a\n      depends_on: ['${var.dep}']\n", ["unknown variable 'dep'", "declared: (none)"], path="cluster.resources[0].depends_on[0]"),
    Bad("interp-attribute", BASE_SPEC + "variables:\n  m: {default: {a: 1}}\noutputs:\n  x: ${var.m.a}\n", ["only ${var.NAME} is supported"], path="outputs.x"),
    Bad("interp-type-after", BASE_SPEC + "variables:\n  port: {type: string, default: eighty}\ncluster:\n  dashboard_port: ${var.port}\n", ["expected an integer, got 'eighty'"], path="cluster.dashboard_port"),
    Bad("interp-in-string-not-int", BASE_SPEC + "variables:\n  port: {type: number, default: 1}\ncluster:\n  dashboard_port: 8${var.port}\n", ["expected an integer, got '81'"], path="cluster.dashboard_port"),
    # -- sensitive variables never appear -----------------------------------------------------
    Bad("secret-wrong-type", BASE_SPEC + "variables:\n  pw: {type: number, sensitive: true}\n", ["variable 'pw' (from --var): expected a number"], path="pw", order=[("var", f"pw={SECRET}")], source="--var", absent=[SECRET, "got"]),
    Bad("secret-fails-validation", BASE_SPEC + "variables:\n  pw: {type: string, sensitive: true, validation: {pattern: '^[0-9]+$', message: digits only}}\n", ["variable 'pw' (from environment (PROVISIONER_VAR_pw)): digits only"], env={"PROVISIONER_VAR_pw": SECRET}, source="environment", absent=[SECRET, "got"]),
    Bad("secret-file-one-of", BASE_SPEC + "variables:\n  pw: {sensitive: true, validation: {one_of: [a]}}\n", ["must be one of 'a'"], source="s.yaml", files={"s.yaml": f"pw: {SECRET}\n"}, order=[("file", "s.yaml")], absent=[SECRET]),
    Bad("secret-interpolated-bad-field", BASE_SPEC + "variables:\n  pw: {type: string, sensitive: true}\ncluster:\n  node_ip: ${var.pw}\n", ["expected an IP address"], path="cluster.node_ip", order=[("var", f"pw={SECRET}")], absent=[SECRET, "got"]),
    Bad("secret-in-longer-string", BASE_SPEC + "variables:\n  pw: {type: string, sensitive: true}\ncluster:\n  gcs_port: 'x-${var.pw}'\n", ["expected an integer"], path="cluster.gcs_port", order=[("var", f"pw={SECRET}")], absent=[SECRET]),
    Bad("secret-echoed-by-unknown-key", BASE_SPEC + "variables:\n  pw: {type: string, sensitive: true}\nserve:\n  manifest: ${var.pw}\n", ["Serve config file", "not found"], path="serve.manifest", order=[("var", f"pw={SECRET}")], absent=[SECRET]),
    # -- serve section and the manifest ---------------------------------------------------
    Bad("serve-manifest-missing", WITH_SERVE, ["Serve config file serve.yaml not found", "line 5"], path="serve.manifest"),
    Bad("serve-manifest-required", BASE_SPEC + "serve:\n  http_port: 8000\n", ["is required"], path="serve.manifest"),
    Bad("serve-unknown-key", BASE_SPEC + "serve:\n  manifest: serve.yaml\n  http-port: 1\n", ["unknown key 'http-port'", "did you mean 'http_port'?"], path="serve.http-port"),
    Bad("serve-port-mismatch", WITH_SERVE + "  http_port: 8001\n", ["serve.yaml sets http_options.port: 9000", "cluster.yaml has serve.http_port: 8001"], path="serve.http_port", files={"serve.yaml": "http_options: {port: 9000}\n" + SERVE_YAML, **APP_DIR}),
    Bad("serve-port-mismatch-default", WITH_SERVE, ["http_options.port: 9000", "serve.http_port: 8000"], path="serve.http_port", files={"serve.yaml": "http_options: {port: 9000}\n" + SERVE_YAML, **APP_DIR}),
    manifest_case("manifest-not-serve", "foo: 1\n", ["is not a Ray Serve config file", "expected a mapping with an 'applications' list"], path=""),
    manifest_case("manifest-a-list", "- a\n", ["is not a Ray Serve config file"], path=""),
    manifest_case("manifest-single-app", "import_path: app:hello\n", ["is not a Ray Serve config file"], path=""),
    manifest_case("manifest-bad-yaml", "applications: [\n", ["invalid YAML"], path=""),
    manifest_case("manifest-empty-apps", "applications: []\n", ["must be a non-empty list"], path="applications"),
    manifest_case("manifest-unknown-top", "applicatons: []\napplications:\n  - import_path: a:b\n", ["unknown key 'applicatons'", "did you mean 'applications'?", "line 1"], path="applicatons"),
    manifest_case("manifest-unknown-app-key", "applications:\n  - name: a\n    import_path: a:b\n    deploymnets: []\n", ["unknown key 'deploymnets'", "did you mean 'deployments'?", "line 4"], path="applications[0].deploymnets"),
    manifest_case("manifest-unknown-deployment-key", "applications:\n  - import_path: a:b\n    deployments:\n      - name: D\n        num_replica: 2\n", ["did you mean 'num_replicas'?"], path="applications[0].deployments[0].num_replica"),
    manifest_case("manifest-unknown-http-key", "http_options: {prot: 8000}\napplications:\n  - import_path: a:b\n", ["unknown key 'prot'", "did you mean 'port'?"], path="http_options.prot"),
    manifest_case("manifest-bad-proxy-location", "proxy_location: Everywhere\napplications:\n  - import_path: a:b\n", ["expected 'Disabled', 'HeadOnly' or 'EveryNode'"], path="proxy_location"),
    manifest_case("manifest-missing-import-path", "applications:\n  - name: a\n", ["is required"], path="applications[0].import_path"),
    manifest_case("manifest-bad-import-path", "applications:\n  - import_path: app\n", ["expected 'module:attribute' or 'module.attribute'", "got 'app'"], path="applications[0].import_path"),
    manifest_case("manifest-two-colons", "applications:\n  - import_path: a:b:c\n", ["module:attribute"], path="applications[0].import_path"),
    manifest_case("manifest-duplicate-app", "applications:\n  - {name: a, import_path: a:b, route_prefix: /a}\n  - {name: a, import_path: a:b, route_prefix: /b}\n", ["application name 'a' is already used by applications[0]"], path="applications[1].name"),
    manifest_case("manifest-duplicate-route", "applications:\n  - {name: a, import_path: a:b}\n  - {name: b, import_path: a:b}\n", ["route_prefix '/' is already used by applications[0]"], path="applications[1].route_prefix"),
    manifest_case("manifest-route-no-slash", "applications:\n  - {import_path: a:b, route_prefix: api}\n", ['must start with "/"'], path="applications[0].route_prefix"),
    manifest_case("manifest-route-trailing-slash", "applications:\n  - {import_path: a:b, route_prefix: /api/}\n", ['must not end with "/"'], path="applications[0].route_prefix"),
    manifest_case("manifest-app-port", "applications:\n  - {import_path: a:b, port: 8000}\n", ["set port under http_options"], path="applications[0].port"),
    manifest_case("manifest-empty-name", "applications:\n  - {name: '', import_path: a:b}\n", ["must not be empty"], path="applications[0].name"),
    manifest_case("manifest-runtime-env-not-map", "applications:\n  - {import_path: a:b, runtime_env: [x]}\n", ["expected a mapping, got a list"], path="applications[0].runtime_env"),
    manifest_case("manifest-working-dir-missing", "applications:\n  - {import_path: a:b, runtime_env: {working_dir: ./nowhere}}\n", ["working_dir './nowhere' does not exist", "line 2"], path="applications[0].runtime_env.working_dir"),
    manifest_case("manifest-working-dir-file", "applications:\n  - {import_path: a:b, runtime_env: {working_dir: f.txt}}\n", ["is not a directory"], path="applications[0].runtime_env.working_dir", files={"f.txt": "x"}),
    manifest_case("manifest-working-dir-not-string", "applications:\n  - {import_path: a:b, runtime_env: {working_dir: 5}}\n", ["expected a local directory or a URI"], path="applications[0].runtime_env.working_dir"),
    manifest_case("manifest-deployment-no-name", "applications:\n  - import_path: a:b\n    deployments: [{num_replicas: 1}]\n", ["is required"], path="applications[0].deployments[0].name"),
    manifest_case("manifest-deployment-duplicate", "applications:\n  - import_path: a:b\n    deployments: [{name: D}, {name: D}]\n", ["deployment 'D' is already configured by deployments[0]"], path="applications[0].deployments[1].name"),
    manifest_case("manifest-num-replicas-negative", "applications:\n  - import_path: a:b\n  - name: two\n    route_prefix: /two\n    import_path: a:b\n    deployments: [{name: D, num_replicas: -1}]\n", ['must be a positive integer or "auto"', "got -1"], path="applications[1].deployments[0].num_replicas"),
    manifest_case("manifest-num-replicas-word", "applications:\n  - import_path: a:b\n    deployments: [{name: D, num_replicas: many}]\n", ['positive integer or "auto"'], path="applications[0].deployments[0].num_replicas"),
    manifest_case("manifest-num-replicas-and-autoscaling", "applications:\n  - import_path: a:b\n    deployments: [{name: D, num_replicas: 2, autoscaling_config: {min_replicas: 1}}]\n", ["cannot be a number when autoscaling_config is set"], path="applications[0].deployments[0].num_replicas"),
    manifest_case("manifest-user-config-not-map", "applications:\n  - import_path: a:b\n    deployments: [{name: D, user_config: 3}]\n", ["expected a mapping, got 3"], path="applications[0].deployments[0].user_config"),
    manifest_case("manifest-logging-key", "applications:\n  - import_path: a:b\n    logging_config: {log_lvl: DEBUG}\n", ["did you mean 'log_level'?"], path="applications[0].logging_config.log_lvl"),
    manifest_case("manifest-duplicate-key", "applications:\n  - import_path: a:b\n    import_path: c:d\n", ["duplicate key 'import_path' at line 3"], path=""),
    Bad("spec-file-missing", "", ["no cluster.yaml in"], path="", source=None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = dict(case.files)
    if case.id != "spec-file-missing":
        files["cluster.yaml"] = case.spec
    write_tree(tmp_path, files)

    with pytest.raises(SpecError) as info:
        load_spec(Path("cluster.yaml"), cli_var_order=case.order, environ=case.env)

    err = info.value
    text = f"{err}\n{err.hint or ''}"
    for fragment in case.fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    for fragment in case.absent:
        assert fragment not in text, f"{fragment!r} must not appear in {text!r}"
    if case.path == "":
        assert err.path is None, err.path
    elif case.path is not None:
        assert err.path == case.path
    if case.source is not None:
        assert err.source == case.source


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
