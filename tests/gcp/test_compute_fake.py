"""The Compute Engine fake, driven by the real google-cloud-compute clients.

One fake serves the whole module; every test names its own resources. A guard refuses any
connection that would leave loopback for the whole module, so every ``.result()`` here also
proves that operation polling stays on the fake.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import urllib.error
import urllib.request
import uuid

import pytest
from google.api_core import exceptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1 as c

from tests.gcp.compute_fake import compute_fake
from tests.gcp.compute_fake.clients import check_polling_endpoint

ZONE, REGION = "us-central1-a", "us-central1"
API = "https://www.googleapis.com/compute/v1/projects/test-project"
FAST = Retry(initial=0.01, maximum=0.05, multiplier=1.5, timeout=10,
             predicate=lambda e: type(e).__name__ == "_OperationNotComplete")

ALL_CLIENTS = [c.InstancesClient, c.InstanceTemplatesClient, c.InstanceGroupManagersClient,
               c.RegionInstanceGroupManagersClient, c.InstanceGroupsClient,
               c.RegionInstanceGroupsClient, c.HealthChecksClient, c.RegionHealthChecksClient,
               c.BackendServicesClient, c.RegionBackendServicesClient, c.UrlMapsClient,
               c.TargetHttpProxiesClient, c.GlobalForwardingRulesClient,
               c.ForwardingRulesClient, c.AddressesClient, c.GlobalAddressesClient,
               c.FirewallsClient, c.NetworksClient, c.SubnetworksClient]


class LeftLoopback(AssertionError):
    pass


@pytest.fixture(scope="module")
def attempts():
    """Refuse (and record) every DNS lookup or connection to anything but loopback."""
    seen: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def loopback(host) -> bool:
        if host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def getaddrinfo(host, *args, **kwargs):
        if not loopback(host):
            seen.append(str(host))
            raise LeftLoopback(f"DNS lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
            seen.append(str(address[0]))
            raise LeftLoopback(f"connection to {address}")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")   # a proxy would take loopback calls
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", connect)
        yield seen
    assert not seen, f"calls left loopback: {seen}"


@pytest.fixture(scope="module")
def fake(attempts):
    with compute_fake() as running:
        yield running


@pytest.fixture(autouse=True)
def defaults(request):
    """Every test starts with the fake's default timing and no injected errors left over."""
    yield
    if "fake" in request.fixturenames:
        running = request.getfixturevalue("fake")
        running.operation_polls_before_done = 1
        running.mig_reads_before_stable = 1
        running.finish_operations()


def P(fake) -> dict:
    return {"project": fake.project}


def template(fake, name: str, **labels) -> None:
    disk = c.AttachedDisk(boot=True, auto_delete=True,
                          initialize_params=c.AttachedDiskInitializeParams(
                              source_image="projects/debian-cloud/global/images/family/debian-12"))
    props = c.InstanceProperties(machine_type="e2-small", labels=labels, disks=[disk],
                                 network_interfaces=[c.NetworkInterface(
                                     network="global/networks/default")])
    fake.client(c.InstanceTemplatesClient).insert(
        **P(fake), instance_template_resource=c.InstanceTemplate(name=name, properties=props)
    ).result()


def instance(name: str, zone: str = ZONE, network_ip: str | None = None, **labels):
    nic = c.NetworkInterface(subnetwork=f"regions/{REGION}/subnetworks/default")
    if network_ip:
        nic.network_i_p = network_ip
    return c.Instance(name=name, machine_type=f"zones/{zone}/machineTypes/e2-small",
                      labels=labels, network_interfaces=[nic],
                      disks=[c.AttachedDisk(boot=True, auto_delete=True,
                                            initialize_params=c.AttachedDiskInitializeParams(
                                                source_image="projects/debian-cloud/global/"
                                                             "images/family/debian-12"))])


def req(fake, **fields) -> dict:
    """A list request with the optional fields the flattened arguments do not take."""
    return {"project": fake.project, **fields}


def raw(fake, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A request outside the client, to see the exact JSON the fake answers."""
    req = urllib.request.Request(f"{fake.endpoint}/compute/v1/projects/{fake.project}/{path}",
                                 method=method, data=json.dumps(body).encode() if body else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# -- endpoints and polling ------------------------------------------------------------------------

def test_every_client_polls_the_fake_and_a_naive_one_would_not(fake, attempts):
    for cls in ALL_CLIENTS:
        check_polling_endpoint(fake.client(cls))   # raises if any polling client points away

    naive = c.FirewallsClient(credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": fake.endpoint})
    op = naive.insert(**P(fake), firewall_resource=c.Firewall(
        name="naive", allowed=[c.Allowed(I_p_protocol="tcp", ports=["22"])]))
    assert fake.count("insert", "firewalls") == 1            # the insert reached the fake ...
    with pytest.raises(LeftLoopback):
        op.result()                                          # ... its polling went to Google
    assert attempts == ["compute.googleapis.com"]
    attempts.clear()
    with pytest.raises(exceptions.NotFound):                 # nobody polled: still inserting
        fake.client(c.FirewallsClient).get(**P(fake), firewall="naive")
    fake.finish_operations()
    assert fake.client(c.FirewallsClient).get(**P(fake), firewall="naive").name == "naive"


def test_operation_is_running_until_polled_then_done(fake):
    fake.operation_polls_before_done = 3
    instances = fake.client(c.InstancesClient)
    ops = fake.client(c.ZoneOperationsClient)
    op = instances.insert(**P(fake), zone=ZONE, instance_resource=instance("slow"))
    assert op.status == c.Operation.Status.RUNNING and op.progress == 0
    assert op.zone == f"{API}/zones/{ZONE}"
    assert op.target_link == f"{API}/zones/{ZONE}/instances/slow"
    assert op.self_link == f"{API}/zones/{ZONE}/operations/{op.name}"
    assert op.operation_type == "insert" and op.target_id and op.insert_time
    with pytest.raises(exceptions.NotFound):                 # not visible before DONE ...
        instances.get(**P(fake), zone=ZONE, instance="slow")
    with pytest.raises(exceptions.Conflict):                 # ... but the name is taken
        instances.insert(**P(fake), zone=ZONE, instance_resource=instance("slow"))
    assert ops.get(**P(fake), zone=ZONE, operation=op.name).status == c.Operation.Status.RUNNING
    assert ops.get(**P(fake), zone=ZONE, operation=op.name).status == c.Operation.Status.RUNNING
    done = ops.wait(**P(fake), zone=ZONE, operation=op.name)
    assert done.status == c.Operation.Status.DONE and done.progress == 100 and done.end_time
    op.result(polling=FAST)
    assert instances.get(**P(fake), zone=ZONE, instance="slow").status == "RUNNING"
    assert fake.count("get", "zoneOperations") == 3 and fake.count("wait") == 1

    listed = [o.name for o in ops.list(**P(fake), zone=ZONE)]
    assert op.name in listed
    ops.delete(**P(fake), zone=ZONE, operation=op.name)
    with pytest.raises(exceptions.NotFound):
        ops.get(**P(fake), zone=ZONE, operation=op.name)

    # result() itself polls until DONE: two more gets here
    fake.operation_polls_before_done = 2
    before = fake.count("get", "zoneOperations")
    instances.delete(**P(fake), zone=ZONE, instance="slow").result(polling=FAST)
    assert fake.count("get", "zoneOperations") - before == 2
    with pytest.raises(exceptions.NotFound):
        instances.get(**P(fake), zone=ZONE, instance="slow")


# -- listing --------------------------------------------------------------------------------------

def test_list_filters_by_label_name_and_description_and_pages(fake):
    addresses = fake.client(c.GlobalAddressesClient)
    for i in range(5):
        addresses.insert(**P(fake), address_resource=c.Address(
            name=f"lst-{i}", description=f"token-{i} of provisioner",
            labels={"role": "lb" if i < 4 else "other", "owner": "lst"})).result()

    def names(**query):
        return [a.name for a in addresses.list(request={"project": fake.project, **query})]

    before = fake.count("list", "globalAddresses")
    assert names(filter='labels.role = "lb"', max_results=2) == ["lst-0", "lst-1", "lst-2",
                                                                  "lst-3"]
    assert fake.count("list", "globalAddresses") - before == 2     # two pages of two
    assert names(filter='name = "lst-3"') == ["lst-3"]
    assert names(filter='(labels.owner = "lst") (name != "lst-0") (labels.role = "lb")') == [
        "lst-1", "lst-2", "lst-3"]
    assert names(filter='description eq ".*token-4 .*"') == ["lst-4"]
    assert names(filter="name eq lst-[13]") == ["lst-1", "lst-3"]
    assert names(filter="(labels.role eq lb) (name ne lst-0)") == ["lst-1", "lst-2", "lst-3"]
    assert names(filter="labels.role:*", order_by="creationTimestamp desc")[0] == "lst-4"
    page = addresses.list(request={"project": fake.project, "max_results": 3}).pages
    first = next(iter(page))
    assert len(first.items) == 3 and first.next_page_token
    with pytest.raises(exceptions.BadRequest, match="Invalid list filter"):
        names(filter='(name eq lst-1) (labels.role = "lb")')           # kinds cannot be mixed
    with pytest.raises(exceptions.BadRequest):
        names(max_results=501)
    with pytest.raises(exceptions.BadRequest):
        names(filter='name = "lst-1"', page_token=first.next_page_token)  # another query's


# -- the external Application Load Balancer chain -------------------------------------------------

def test_load_balancer_chain_is_wired_and_in_use_parts_cannot_be_deleted(fake):
    template(fake, "lb-tmpl", role="worker")
    migs = fake.client(c.InstanceGroupManagersClient)
    migs.insert(**P(fake), zone=ZONE, instance_group_manager_resource=c.InstanceGroupManager(
        name="lb-workers", base_instance_name="lb-w", target_size=1,
        instance_template=f"{API}/global/instanceTemplates/lb-tmpl",
        named_ports=[c.NamedPort(name="http", port=8000)])).result()
    group = migs.get(**P(fake), zone=ZONE, instance_group_manager="lb-workers").instance_group
    assert group == f"{API}/zones/{ZONE}/instanceGroups/lb-workers"
    ig = fake.client(c.InstanceGroupsClient).get(**P(fake), zone=ZONE,
                                                 instance_group="lb-workers")
    assert [(p.name, p.port) for p in ig.named_ports] == [("http", 8000)]

    checks = fake.client(c.HealthChecksClient)
    checks.insert(**P(fake), health_check_resource=c.HealthCheck(
        name="lb-hc", type_="HTTP", check_interval_sec=1, timeout_sec=1,
        http_health_check=c.HTTPHealthCheck(port=8000, request_path="/-/healthz"))).result()
    services = fake.client(c.BackendServicesClient)
    services.insert(**P(fake), backend_service_resource=c.BackendService(
        name="lb-bs", protocol="HTTP", port_name="http", load_balancing_scheme="EXTERNAL",
        health_checks=["global/healthChecks/lb-hc"],
        backends=[c.Backend(group=group, balancing_mode="UTILIZATION")])).result()
    url_maps = fake.client(c.UrlMapsClient)
    url_maps.insert(**P(fake), url_map_resource=c.UrlMap(
        name="lb-map", default_service="global/backendServices/lb-bs")).result()
    proxies = fake.client(c.TargetHttpProxiesClient)
    proxies.insert(**P(fake), target_http_proxy_resource=c.TargetHttpProxy(
        name="lb-proxy", url_map="global/urlMaps/lb-map")).result()
    addresses = fake.client(c.GlobalAddressesClient)
    addresses.insert(**P(fake), address_resource=c.Address(name="lb-ip")).result()
    ip = addresses.get(**P(fake), address="lb-ip")
    assert ip.status == "RESERVED" and ip.address_type == "EXTERNAL"
    rules = fake.client(c.GlobalForwardingRulesClient)
    rules.insert(**P(fake), forwarding_rule_resource=c.ForwardingRule(
        name="lb-fr", target="global/targetHttpProxies/lb-proxy", port_range="80",
        I_p_protocol="TCP", I_p_address="global/addresses/lb-ip",
        load_balancing_scheme="EXTERNAL", labels={"cluster": "lb"})).result()

    rule = rules.get(**P(fake), forwarding_rule="lb-fr")
    assert rule.target == f"{API}/global/targetHttpProxies/lb-proxy"     # stored as full URLs
    assert rule.I_p_address == ip.address and rule.port_range == "80-80"
    ip = addresses.get(**P(fake), address="lb-ip")
    assert ip.status == "IN_USE" and list(ip.users) == [rule.self_link]
    service = services.get(**P(fake), backend_service="lb-bs")
    assert list(service.health_checks) == [f"{API}/global/healthChecks/lb-hc"]
    assert service.backends[0].group == group
    assert [u.reference for u in service.used_by] == [f"{API}/global/urlMaps/lb-map"]

    in_use = [(checks.delete, {"health_check": "lb-hc"}, "health_check", "backendServices/lb-bs"),
              (services.delete, {"backend_service": "lb-bs"}, "backend_service", "urlMaps/lb-map"),
              (url_maps.delete, {"url_map": "lb-map"}, "url_map", "targetHttpProxies/lb-proxy"),
              (proxies.delete, {"target_http_proxy": "lb-proxy"}, "target_http_proxy",
               "forwardingRules/lb-fr"),
              (addresses.delete, {"address": "lb-ip"}, "address", "forwardingRules/lb-fr"),
              (migs.delete, {"zone": ZONE, "instance_group_manager": "lb-workers"},
               "instance_group", "backendServices/lb-bs"),
              (fake.client(c.InstanceGroupsClient).delete,
               {"zone": ZONE, "instance_group": "lb-workers"}, "instance_group",
               "instanceGroupManagers/lb-workers"),
              (fake.client(c.InstanceTemplatesClient).delete, {"instance_template": "lb-tmpl"},
               "instance_template", "instanceGroupManagers/lb-workers")]
    for delete, args, noun, user in in_use:
        with pytest.raises(exceptions.BadRequest) as refused:
            delete(**P(fake), **args)
        assert refused.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
        assert f"The {noun} resource 'projects/test-project/" in refused.value.message
        assert "is already being used by 'projects/test-project/" in refused.value.message
        assert user in refused.value.message

    # the same chain torn down in order works, and the address is free again
    rules.delete(**P(fake), forwarding_rule="lb-fr").result()
    assert addresses.get(**P(fake), address="lb-ip").status == "RESERVED"
    proxies.delete(**P(fake), target_http_proxy="lb-proxy").result()
    url_maps.delete(**P(fake), url_map="lb-map").result()
    services.delete(**P(fake), backend_service="lb-bs").result()
    checks.delete(**P(fake), health_check="lb-hc").result()
    migs.delete(**P(fake), zone=ZONE, instance_group_manager="lb-workers").result()
    with pytest.raises(exceptions.NotFound):
        fake.client(c.InstanceGroupsClient).get(**P(fake), zone=ZONE, instance_group="lb-workers")
    assert not [i for i in fake.client(c.InstancesClient).list(**P(fake), zone=ZONE)
                if i.name.startswith("lb-w-")]
    fake.client(c.InstanceTemplatesClient).delete(**P(fake), instance_template="lb-tmpl").result()


def test_load_balancer_rules_gce_enforces(fake):
    services = fake.client(c.BackendServicesClient)
    template(fake, "rules-tmpl")
    fake.client(c.InstanceGroupManagersClient).insert(
        **P(fake), zone=ZONE, instance_group_manager_resource=c.InstanceGroupManager(
            name="rules-mig", base_instance_name="rules", target_size=0,
            instance_template="global/instanceTemplates/rules-tmpl")).result()
    group = f"zones/{ZONE}/instanceGroups/rules-mig"
    with pytest.raises(exceptions.BadRequest, match="must have a health check"):
        services.insert(**P(fake), backend_service_resource=c.BackendService(
            name="rules-bs", backends=[c.Backend(group=group)]))
    with pytest.raises(exceptions.BadRequest, match="healthChecks\\[0\\]"):
        services.insert(**P(fake), backend_service_resource=c.BackendService(
            name="rules-bs", health_checks=["global/healthChecks/missing"],
            backends=[c.Backend(group=group)]))
    fake.client(c.HealthChecksClient).insert(**P(fake), health_check_resource=c.HealthCheck(
        name="rules-hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=22))).result()
    services.insert(**P(fake), backend_service_resource=c.BackendService(
        name="rules-bs", load_balancing_scheme="EXTERNAL_MANAGED",
        health_checks=["global/healthChecks/rules-hc"],
        backends=[c.Backend(group=group)])).result()
    fake.client(c.UrlMapsClient).insert(**P(fake), url_map_resource=c.UrlMap(
        name="rules-map", default_service="global/backendServices/rules-bs")).result()
    fake.client(c.TargetHttpProxiesClient).insert(
        **P(fake), target_http_proxy_resource=c.TargetHttpProxy(
            name="rules-proxy", url_map="global/urlMaps/rules-map")).result()
    rules = fake.client(c.GlobalForwardingRulesClient)
    for port, scheme, why in (("8000", "EXTERNAL_MANAGED", "Allowed ports are: 80, 8080"),
                              ("80", "EXTERNAL", "must match")):
        with pytest.raises(exceptions.BadRequest, match=why):
            rules.insert(**P(fake), forwarding_rule_resource=c.ForwardingRule(
                name="rules-fr", target="global/targetHttpProxies/rules-proxy",
                port_range=port, load_balancing_scheme=scheme))
    rules.insert(**P(fake), forwarding_rule_resource=c.ForwardingRule(
        name="rules-fr", target="global/targetHttpProxies/rules-proxy", port_range="8080",
        load_balancing_scheme="EXTERNAL_MANAGED")).result()
    assert ipaddress.ip_address(rules.get(**P(fake), forwarding_rule="rules-fr").I_p_address)


# -- managed instance groups ---------------------------------------------------------------------

def test_mig_resize_creates_and_removes_managed_instances(fake):
    template(fake, "rs-tmpl", role="worker", cluster="rs")
    migs = fake.client(c.InstanceGroupManagersClient)
    op = migs.insert(**P(fake), zone=ZONE, instance_group_manager_resource=c.InstanceGroupManager(
        name="rs-mig", base_instance_name="rs-worker", target_size=2,
        instance_template="global/instanceTemplates/rs-tmpl"))
    op.result()

    def managed():
        return {m.name: (m.current_action, m.instance_status)
                for m in migs.list_managed_instances(**P(fake), zone=ZONE,
                                                     instance_group_manager="rs-mig")}

    # DONE does not mean the VMs exist: they are CREATING until the group has done its work
    first = managed()
    assert set(first.values()) == {("CREATING", "")} and len(first) == 2
    assert all(len(name) == len("rs-worker-") + 4 and name.startswith("rs-worker-")
               for name in first)
    second = managed()
    assert set(second.values()) == {("NONE", "RUNNING")} and second.keys() == first.keys()
    mig = migs.get(**P(fake), zone=ZONE, instance_group_manager="rs-mig")
    assert mig.status.is_stable and mig.current_actions.none == 2 and mig.target_size == 2

    vms = {i.name: i for i in fake.client(c.InstancesClient).list(
        request=req(fake, zone=ZONE, filter='labels.cluster = "rs"'))}
    assert vms.keys() == first.keys()
    vm = next(iter(vms.values()))
    assert dict(vm.labels) == {"role": "worker", "cluster": "rs"}
    assert vm.machine_type == f"{API}/zones/{ZONE}/machineTypes/e2-small"
    assert {i.key: i.value for i in vm.metadata.items}["created-by"] == \
        f"projects/test-project/zones/{ZONE}/instanceGroupManagers/rs-mig"
    assert ipaddress.ip_address(vm.network_interfaces[0].network_i_p) in \
        ipaddress.ip_network("10.128.0.0/20")

    groups = fake.client(c.InstanceGroupsClient)
    members = groups.list_instances(**P(fake), zone=ZONE, instance_group="rs-mig",
                                    instance_groups_list_instances_request_resource=c.
                                    InstanceGroupsListInstancesRequest(instance_state="ALL"))
    assert {m.instance.rsplit("/", 1)[1] for m in members} == set(vms)
    assert groups.get(**P(fake), zone=ZONE, instance_group="rs-mig").size == 2
    assert "rs-mig" in [g.name for g in groups.list(**P(fake), zone=ZONE)]

    migs.resize(**P(fake), zone=ZONE, instance_group_manager="rs-mig", size=4).result()
    assert sorted(a for a, _ in managed().values()) == ["CREATING", "CREATING", "NONE", "NONE"]
    assert len(managed()) == 4 and migs.get(**P(fake), zone=ZONE,
                                            instance_group_manager="rs-mig").status.is_stable
    migs.resize(**P(fake), zone=ZONE, instance_group_manager="rs-mig", size=1).result()
    assert sorted(a for a, _ in managed().values()) == ["DELETING"] * 3 + ["NONE"]
    assert len(managed()) == 1 and set(managed()) < set(first)
    assert fake.count("resize", "instanceGroupManagers") == 2

    # a VM deleted behind the group's back is recreated under the same name
    survivor = next(iter(managed()))
    fake.client(c.InstancesClient).delete(**P(fake), zone=ZONE, instance=survivor).result()
    assert managed() == {survivor: ("CREATING", "")}
    assert managed() == {survivor: ("NONE", "RUNNING")}

    # named ports are set on the group (fingerprint checked) and show on the MIG
    fp = groups.get(**P(fake), zone=ZONE, instance_group="rs-mig").fingerprint
    ports = c.InstanceGroupsSetNamedPortsRequest(named_ports=[c.NamedPort(name="http", port=80)],
                                                 fingerprint=fp)
    groups.set_named_ports(**P(fake), zone=ZONE, instance_group="rs-mig",
                           instance_groups_set_named_ports_request_resource=ports).result()
    with pytest.raises(exceptions.PreconditionFailed):
        groups.set_named_ports(**P(fake), zone=ZONE, instance_group="rs-mig",
                               instance_groups_set_named_ports_request_resource=ports)
    assert [p.port for p in migs.get(**P(fake), zone=ZONE,
                                     instance_group_manager="rs-mig").named_ports] == [80]


def test_regional_mig_spreads_over_zones(fake):
    template(fake, "reg-tmpl", cluster="reg")
    migs = fake.client(c.RegionInstanceGroupManagersClient)
    migs.insert(**P(fake), region=REGION,
                instance_group_manager_resource=c.InstanceGroupManager(
                    name="reg-mig", base_instance_name="reg", target_size=3,
                    instance_template="global/instanceTemplates/reg-tmpl")).result()
    fake.settle_groups()
    listed = list(migs.list_managed_instances(**P(fake), region=REGION,
                                              instance_group_manager="reg-mig"))
    zones = {m.instance.split("/zones/")[1].split("/")[0] for m in listed}
    assert len(listed) == 3 and zones == {"us-central1-a", "us-central1-b", "us-central1-c"}
    mig = migs.get(**P(fake), region=REGION, instance_group_manager="reg-mig")
    assert mig.region == f"{API}/regions/{REGION}" and mig.status.is_stable
    assert mig.instance_group == f"{API}/regions/{REGION}/instanceGroups/reg-mig"
    assert fake.client(c.RegionInstanceGroupsClient).get(
        **P(fake), region=REGION, instance_group="reg-mig").size == 3
    assert [m.name for m in migs.list(**P(fake), region=REGION)] == ["reg-mig"]
    # PAGELESS (the default) ignores maxResults; PAGINATED pages
    assert len(list(migs.list_managed_instances(request=req(
        fake, region=REGION, instance_group_manager="reg-mig", max_results=1)))) == 3
    assert fake.count("listManagedInstances", "regionInstanceGroupManagers") == 2
    migs.patch(**P(fake), region=REGION, instance_group_manager="reg-mig",
               instance_group_manager_resource=c.InstanceGroupManager(
                   list_managed_instances_results="PAGINATED",
                   fingerprint=mig.fingerprint)).result()
    assert len(list(migs.list_managed_instances(request=req(
        fake, region=REGION, instance_group_manager="reg-mig", max_results=1)))) == 3
    assert fake.count("listManagedInstances", "regionInstanceGroupManagers") == 5
    migs.resize(**P(fake), region=REGION, instance_group_manager="reg-mig", size=0).result()
    fake.settle_groups()
    assert not list(migs.list_managed_instances(**P(fake), region=REGION,
                                                instance_group_manager="reg-mig"))
    migs.delete(**P(fake), region=REGION, instance_group_manager="reg-mig").result()
    assert fake.count("insert", "regionInstanceGroupManagers") == 1
    assert fake.count(collection="regionOperations") >= 3


# -- idempotence, errors, failures ----------------------------------------------------------------

def test_request_id_makes_a_retried_insert_act_once(fake):
    checks = fake.client(c.HealthChecksClient)
    token = str(uuid.uuid4())
    body = c.HealthCheck(name="rid-hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=80))
    first = checks.insert(request={"project": fake.project, "health_check_resource": body,
                                   "request_id": token})
    again = checks.insert(request={"project": fake.project, "health_check_resource": body,
                                   "request_id": token})
    assert again.name == first.name
    first.result()
    third = checks.insert(request={"project": fake.project, "health_check_resource": body,
                                   "request_id": token})
    assert third.name == first.name and third.status == c.Operation.Status.DONE
    assert [h.name for h in checks.list(request=req(fake, filter='name = "rid-hc"'))] == [
        "rid-hc"]
    with pytest.raises(exceptions.Conflict):            # a new request id acts again
        checks.insert(request={"project": fake.project, "health_check_resource": body,
                               "request_id": str(uuid.uuid4())})
    with pytest.raises(exceptions.BadRequest, match="valid UUID"):
        checks.insert(request={"project": fake.project, "health_check_resource": body,
                               "request_id": "apply-1"})


def test_errors_are_googles_and_raise_the_right_exceptions(fake):
    instances = fake.client(c.InstancesClient)
    with pytest.raises(exceptions.NotFound) as missing:
        instances.get(**P(fake), zone=ZONE, instance="ghost")
    assert missing.value.message.endswith(
        f": The resource 'projects/test-project/zones/{ZONE}/instances/ghost' was not found")
    status, body = raw(fake, "GET", f"zones/{ZONE}/instances/ghost")
    assert status == 404 and body["error"]["errors"] == [{
        "message": body["error"]["message"], "domain": "global", "reason": "notFound"}]

    instances.insert(**P(fake), zone=ZONE, instance_resource=instance("err-vm", team="a")).result()
    with pytest.raises(exceptions.Conflict) as exists:
        instances.insert(**P(fake), zone=ZONE, instance_resource=instance("err-vm"))
    assert exists.value.message.endswith("instances/err-vm' already exists")
    assert exists.value.errors[0]["reason"] == "alreadyExists"

    vm = instances.get(**P(fake), zone=ZONE, instance="err-vm")
    assert instances.get(**P(fake), zone=ZONE, instance=str(vm.id)).name == "err-vm"  # by id
    with pytest.raises(exceptions.BadRequest) as bad_path:
        instances.get(**P(fake), zone=ZONE, instance="Err_VM")
    assert bad_path.value.errors[0]["reason"] == "invalidParameter"
    labels = c.InstancesSetLabelsRequest(labels={"team": "b"},
                                         label_fingerprint=vm.label_fingerprint)
    instances.set_labels(**P(fake), zone=ZONE, instance="err-vm",
                         instances_set_labels_request_resource=labels).result()
    changed = instances.get(**P(fake), zone=ZONE, instance="err-vm")
    assert dict(changed.labels) == {"team": "b"}
    assert changed.label_fingerprint != vm.label_fingerprint
    with pytest.raises(exceptions.PreconditionFailed) as stale:   # the old fingerprint
        instances.set_labels(**P(fake), zone=ZONE, instance="err-vm",
                             instances_set_labels_request_resource=labels)
    assert stale.value.errors[0]["reason"] == "conditionNotMet"

    for bad, reason in ((instance("Bad_Name"), "invalid"), (instance("x" * 64), "invalid"),
                        (c.Instance(name="no-type"), "required")):
        with pytest.raises(exceptions.BadRequest) as refused:
            instances.insert(**P(fake), zone=ZONE, instance_resource=bad)
        assert refused.value.errors[0]["reason"] == reason
    with pytest.raises(exceptions.BadRequest, match="Must be a match of regex"):
        instances.insert(**P(fake), zone=ZONE, instance_resource=instance("Bad_Name"))
    with pytest.raises(exceptions.BadRequest, match="violates format constraints"):
        instances.insert(**P(fake), zone=ZONE, instance_resource=instance("lbl", Team="A"))
    wrong_net = instance("wrong-net")
    wrong_net.network_interfaces[0].subnetwork = f"regions/{REGION}/subnetworks/nope"
    with pytest.raises(exceptions.BadRequest, match="referenced subnetwork"):
        instances.insert(**P(fake), zone=ZONE, instance_resource=wrong_net)
    with pytest.raises(exceptions.BadRequest, match="HTTP healthCheck missing"):
        fake.client(c.HealthChecksClient).insert(**P(fake), health_check_resource=c.HealthCheck(
            name="err-hc", type_="HTTP"))
    with pytest.raises(exceptions.MethodNotImplemented):          # never silently accepted
        instances.stop(**P(fake), zone=ZONE, instance="err-vm")
    instances.delete(**P(fake), zone=ZONE, instance="err-vm").result()


def test_async_insert_failure_surfaces_through_the_operation(fake):
    instances = fake.client(c.InstancesClient)
    fake.fail_next_insert("instances", "QUOTA_EXCEEDED",
                          "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.")
    op = instances.insert(**P(fake), zone=ZONE, instance_resource=instance("quota-vm"))
    assert op.status == c.Operation.Status.RUNNING       # accepted, fails later
    with pytest.raises(exceptions.Forbidden, match="FORBIDDEN"):
        op.result()
    assert op.error_code == 403 and op.error_message == "FORBIDDEN"
    assert [(e.code, e.message) for e in op.error.errors] == [
        ("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.")]
    assert isinstance(op.exception(), exceptions.Forbidden)
    with pytest.raises(exceptions.NotFound):
        instances.get(**P(fake), zone=ZONE, instance="quota-vm")

    fake.fail_next_insert("instances", "ZONE_RESOURCE_POOL_EXHAUSTED",
                          f"The zone 'projects/test-project/zones/{ZONE}' does not have enough "
                          "resources available to fulfill the request.  Try a different zone, "
                          "or try again later.")
    op = instances.insert(**P(fake), zone=ZONE, instance_resource=instance("quota-vm"))
    with pytest.raises(exceptions.ServiceUnavailable):
        op.result()
    assert op.error_code == 503 and op.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    instances.insert(**P(fake), zone=ZONE, instance_resource=instance("quota-vm")).result()

    # a MIG's VM creation fails the same way: CREATING with lastAttempt errors, then retried
    template(fake, "q-tmpl")
    migs = fake.client(c.InstanceGroupManagersClient)
    migs.insert(**P(fake), zone=ZONE, instance_group_manager_resource=c.InstanceGroupManager(
        name="q-mig", base_instance_name="q", target_size=1,
        instance_template="global/instanceTemplates/q-tmpl")).result()
    fake.fail_next_insert("instances", "QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.")
    assert not migs.get(**P(fake), zone=ZONE, instance_group_manager="q-mig").status.is_stable
    [failed] = migs.list_managed_instances(**P(fake), zone=ZONE, instance_group_manager="q-mig")
    assert failed.current_action == "CREATING" and not failed.instance_status
    assert failed.last_attempt.errors.errors[0].code == "QUOTA_EXCEEDED"
    [retried] = migs.list_managed_instances(**P(fake), zone=ZONE, instance_group_manager="q-mig")
    assert retried.current_action == "NONE" and retried.instance_status == "RUNNING"


def test_injected_throttling_and_transient_errors(fake):
    migs = fake.client(c.InstanceGroupManagersClient)
    fake.inject(429, method="list", collection="instanceGroupManagers")
    with pytest.raises(exceptions.TooManyRequests):
        list(migs.list(**P(fake), zone=ZONE))
    fake.inject(429, method="GET", collection="instances")
    status, body = raw(fake, "GET", f"zones/{ZONE}/instances")
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["errors"][0]["domain"] == "usageLimits"
    assert body["error"]["errors"][0]["reason"] == "rateLimitExceeded"

    firewalls = fake.client(c.FirewallsClient)
    fake.inject(503, method="insert", collection="firewalls")
    with pytest.raises(exceptions.ServiceUnavailable):      # inserts are not retried by default
        firewalls.insert(**P(fake), firewall_resource=c.Firewall(
            name="inj-fw", allowed=[c.Allowed(I_p_protocol="tcp", ports=["8000"])]))
    fake.inject(503, method="list", collection="instanceGroupManagers")
    before = fake.count("list", "instanceGroupManagers")
    list(migs.list(**P(fake), zone=ZONE))                   # lists are: the client retried
    assert fake.count("list", "instanceGroupManagers") - before == 2
    fake.inject(503, collection="zoneOperations")           # a failed poll is retried as well
    fake.client(c.InstancesClient).insert(
        **P(fake), zone=ZONE, instance_resource=instance("inj-vm")).result(polling=FAST)


def test_reserved_internal_address_is_taken_by_a_vm_and_freed(fake):
    addresses = fake.client(c.AddressesClient)
    addresses.insert(**P(fake), region=REGION, address_resource=c.Address(
        name="head-ip", address_type="INTERNAL",
        subnetwork=f"regions/{REGION}/subnetworks/default", labels={"role": "head"})).result()
    reserved = addresses.get(**P(fake), region=REGION, address="head-ip")
    assert reserved.status == "RESERVED" and not reserved.users
    assert reserved.purpose == "GCE_ENDPOINT"
    assert reserved.subnetwork == f"{API}/regions/{REGION}/subnetworks/default"
    ip = reserved.address
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.128.0.0/20")

    instances = fake.client(c.InstancesClient)
    others = [i.network_interfaces[0].network_i_p for i in instances.list(**P(fake), zone=ZONE)]
    assert ip not in others                     # never handed out as an ephemeral address
    instances.insert(**P(fake), zone=ZONE,
                     instance_resource=instance("head", network_ip=ip)).result()
    vm = instances.get(**P(fake), zone=ZONE, instance="head")
    assert vm.network_interfaces[0].network_i_p == ip
    used = addresses.get(**P(fake), region=REGION, address="head-ip")
    assert used.status == "IN_USE" and list(used.users) == [vm.self_link]
    with pytest.raises(exceptions.BadRequest, match="already being used"):
        instances.insert(**P(fake), zone=ZONE, instance_resource=instance("head2", network_ip=ip))
    with pytest.raises(exceptions.BadRequest) as refused:
        addresses.delete(**P(fake), region=REGION, address="head-ip")
    assert refused.value.errors[0]["reason"] == "resourceInUseByAnotherResource"

    instances.delete(**P(fake), zone=ZONE, instance="head").result()
    freed = addresses.get(**P(fake), region=REGION, address="head-ip")
    assert freed.status == "RESERVED" and not freed.users
    fp = freed.label_fingerprint
    addresses.set_labels(**P(fake), region=REGION, resource="head-ip",
                         region_set_labels_request_resource=c.RegionSetLabelsRequest(
                             labels={"role": "standby"}, label_fingerprint=fp)).result()
    assert addresses.get(**P(fake), region=REGION, address="head-ip").labels["role"] == "standby"
    addresses.delete(**P(fake), region=REGION, address="head-ip").result()


def test_regional_internal_load_balancer_parts(fake):
    checks = fake.client(c.RegionHealthChecksClient)
    checks.insert(**P(fake), region=REGION, health_check_resource=c.HealthCheck(
        name="ilb-hc", type_="HTTP", http_health_check=c.HTTPHealthCheck(port=8000))).result()
    template(fake, "ilb-tmpl")
    fake.client(c.InstanceGroupManagersClient).insert(
        **P(fake), zone=ZONE, instance_group_manager_resource=c.InstanceGroupManager(
            name="ilb-mig", base_instance_name="ilb", target_size=0,
            instance_template="global/instanceTemplates/ilb-tmpl")).result()
    services = fake.client(c.RegionBackendServicesClient)
    services.insert(**P(fake), region=REGION, backend_service_resource=c.BackendService(
        name="ilb-bs", load_balancing_scheme="INTERNAL", protocol="TCP",
        health_checks=[f"regions/{REGION}/healthChecks/ilb-hc"],
        backends=[c.Backend(group=f"zones/{ZONE}/instanceGroups/ilb-mig")])).result()
    rules = fake.client(c.ForwardingRulesClient)
    rules.insert(**P(fake), region=REGION, forwarding_rule_resource=c.ForwardingRule(
        name="ilb-fr", load_balancing_scheme="INTERNAL", ports=["8000"],
        backend_service=f"regions/{REGION}/backendServices/ilb-bs")).result()
    rule = rules.get(**P(fake), region=REGION, forwarding_rule="ilb-fr")
    assert rule.subnetwork == f"{API}/regions/{REGION}/subnetworks/default"
    assert ipaddress.ip_address(rule.I_p_address) in ipaddress.ip_network("10.128.0.0/20")
    with pytest.raises(exceptions.BadRequest, match="resource 'projects"):
        checks.delete(**P(fake), region=REGION, health_check="ilb-hc")
    # a global backend service may not use a regional health check
    with pytest.raises(exceptions.BadRequest, match="healthChecks"):
        fake.client(c.BackendServicesClient).insert(
            **P(fake), backend_service_resource=c.BackendService(
                name="mixed-bs", health_checks=[f"regions/{REGION}/healthChecks/ilb-hc"]))
    rules.delete(**P(fake), region=REGION, forwarding_rule="ilb-fr").result()
    services.delete(**P(fake), region=REGION, backend_service="ilb-bs").result()
    checks.delete(**P(fake), region=REGION, health_check="ilb-hc").result()


# -- updates and fingerprints ---------------------------------------------------------------------

def test_patch_update_and_fingerprints(fake):
    firewalls = fake.client(c.FirewallsClient)
    firewalls.insert(**P(fake), firewall_resource=c.Firewall(
        name="fp-fw", target_tags=["ray"],
        allowed=[c.Allowed(I_p_protocol="tcp", ports=["8000"])])).result()
    firewalls.patch(**P(fake), firewall="fp-fw", firewall_resource=c.Firewall(
        source_ranges=["10.0.0.0/8"])).result()                     # no fingerprint in v1
    fw = firewalls.get(**P(fake), firewall="fp-fw")
    assert list(fw.source_ranges) == ["10.0.0.0/8"] and list(fw.target_tags) == ["ray"]
    assert fw.network == f"{API}/global/networks/default" and fw.priority == 1000

    checks = fake.client(c.HealthChecksClient)
    checks.insert(**P(fake), health_check_resource=c.HealthCheck(
        name="fp-hc", type_="HTTP", http_health_check=c.HTTPHealthCheck(port=8000))).result()
    checks.patch(**P(fake), health_check="fp-hc", health_check_resource=c.HealthCheck(
        http_health_check=c.HTTPHealthCheck(request_path="/-/healthz"))).result()
    hc = checks.get(**P(fake), health_check="fp-hc")
    assert hc.http_health_check.port == 8000 and hc.http_health_check.request_path == "/-/healthz"

    services = fake.client(c.BackendServicesClient)
    services.insert(**P(fake), backend_service_resource=c.BackendService(
        name="fp-bs", health_checks=["global/healthChecks/fp-hc"])).result()
    old = services.get(**P(fake), backend_service="fp-bs").fingerprint
    with pytest.raises(exceptions.PreconditionFailed):              # fingerprint is required
        services.patch(**P(fake), backend_service="fp-bs",
                       backend_service_resource=c.BackendService(timeout_sec=60))
    services.patch(**P(fake), backend_service="fp-bs", backend_service_resource=c.BackendService(
        timeout_sec=60, fingerprint=old)).result()
    bs = services.get(**P(fake), backend_service="fp-bs")
    assert bs.timeout_sec == 60 and bs.fingerprint != old
    with pytest.raises(exceptions.PreconditionFailed):
        services.patch(**P(fake), backend_service="fp-bs",
                       backend_service_resource=c.BackendService(timeout_sec=90, fingerprint=old))

    bs.timeout_sec = 45                                             # update: the whole body
    services.update(**P(fake), backend_service="fp-bs", backend_service_resource=bs).result()
    with pytest.raises(exceptions.PreconditionFailed):
        services.update(**P(fake), backend_service="fp-bs", backend_service_resource=bs)
    bs = services.get(**P(fake), backend_service="fp-bs")
    assert bs.timeout_sec == 45 and list(bs.health_checks) == [f"{API}/global/healthChecks/fp-hc"]

    # a change while another operation on the same resource runs is refused
    fake.operation_polls_before_done = 5
    op = services.patch(**P(fake), backend_service="fp-bs", backend_service_resource=c.
                        BackendService(timeout_sec=90, fingerprint=bs.fingerprint))
    with pytest.raises(exceptions.BadRequest, match="not ready"):
        services.delete(**P(fake), backend_service="fp-bs")
    fake.finish_operations()
    fake.operation_polls_before_done = 1
    assert services.get(**P(fake), backend_service="fp-bs").timeout_sec == 90
    assert op.done()

    url_maps = fake.client(c.UrlMapsClient)
    url_maps.insert(**P(fake), url_map_resource=c.UrlMap(
        name="fp-map", default_service="global/backendServices/fp-bs")).result()
    current = url_maps.get(**P(fake), url_map="fp-map")
    current.host_rules = [c.HostRule(hosts=["*"], path_matcher="all")]
    current.path_matchers = [c.PathMatcher(name="all",
                                           default_service="global/backendServices/fp-bs")]
    url_maps.update(**P(fake), url_map="fp-map", url_map_resource=current).result()
    with pytest.raises(exceptions.PreconditionFailed):
        url_maps.update(**P(fake), url_map="fp-map", url_map_resource=current)  # stale now
    assert url_maps.get(**P(fake), url_map="fp-map").path_matchers[0].name == "all"

    proxies = fake.client(c.TargetHttpProxiesClient)
    proxies.insert(**P(fake), target_http_proxy_resource=c.TargetHttpProxy(
        name="fp-proxy", url_map="global/urlMaps/fp-map")).result()
    url_maps.insert(**P(fake), url_map_resource=c.UrlMap(
        name="fp-map2", default_service="global/backendServices/fp-bs")).result()
    proxies.set_url_map(**P(fake), target_http_proxy="fp-proxy",
                        url_map_reference_resource=c.UrlMapReference(
                            url_map=f"{API}/global/urlMaps/fp-map2")).result()
    assert proxies.get(**P(fake), target_http_proxy="fp-proxy").url_map.endswith("/fp-map2")

    rules = fake.client(c.GlobalForwardingRulesClient)
    rules.insert(**P(fake), forwarding_rule_resource=c.ForwardingRule(
        name="fp-fr", target="global/targetHttpProxies/fp-proxy", port_range="80")).result()
    rule = rules.get(**P(fake), forwarding_rule="fp-fr")
    assert rule.label_fingerprint == "42WmSpB8rSM="                 # GCE's value for no labels
    rules.set_labels(**P(fake), resource="fp-fr",
                     global_set_labels_request_resource=c.GlobalSetLabelsRequest(
                         labels={"cluster": "fp"}, label_fingerprint=rule.label_fingerprint)
                     ).result()
    with pytest.raises(exceptions.PreconditionFailed):
        rules.set_labels(**P(fake), resource="fp-fr",
                         global_set_labels_request_resource=c.GlobalSetLabelsRequest(
                             labels={"cluster": "x"}, label_fingerprint=rule.label_fingerprint))
    proxies.insert(**P(fake), target_http_proxy_resource=c.TargetHttpProxy(
        name="fp-proxy2", url_map="global/urlMaps/fp-map")).result()
    rules.set_target(**P(fake), forwarding_rule="fp-fr", target_reference_resource=c.
                     TargetReference(target="global/targetHttpProxies/fp-proxy2")).result()
    moved = rules.get(**P(fake), forwarding_rule="fp-fr")
    assert moved.target.endswith("/fp-proxy2") and moved.labels["cluster"] == "fp"
    assert [r.name for r in rules.list(request=req(fake, filter='labels.cluster = "fp"'))] == [
        "fp-fr"]


def test_default_network_subnetworks_and_firewalls_exist(fake):
    network = fake.client(c.NetworksClient).get(**P(fake), network="default")
    assert network.auto_create_subnetworks and network.self_link == f"{API}/global/networks/default"
    subnet = fake.client(c.SubnetworksClient).get(**P(fake), region=REGION, subnetwork="default")
    assert subnet.ip_cidr_range == "10.128.0.0/20" and subnet.gateway_address == "10.128.0.1"
    assert subnet.self_link in network.subnetworks
    names = {f.name for f in fake.client(c.FirewallsClient).list(
        request=req(fake, filter='name eq "default-allow-.*"'))}
    assert names == {"default-allow-internal", "default-allow-ssh", "default-allow-rdp",
                     "default-allow-icmp"}
    with pytest.raises(exceptions.BadRequest, match="is already being used by"):
        fake.client(c.NetworksClient).delete(**P(fake), network="default")
    with pytest.raises(exceptions.BadRequest, match="Unknown zone"):
        fake.client(c.InstancesClient).get(**P(fake), zone="mars-1a", instance="x")
    with pytest.raises(exceptions.NotFound):
        fake.client(c.InstancesClient).get(project="someone-else", zone=ZONE, instance="x")


def test_custom_network_and_subnetwork(fake):
    networks, subnets = fake.client(c.NetworksClient), fake.client(c.SubnetworksClient)
    networks.insert(**P(fake), network_resource=c.Network(
        name="ray-net", auto_create_subnetworks=False)).result()
    subnets.insert(**P(fake), region=REGION, subnetwork_resource=c.Subnetwork(
        name="ray-sub", network="global/networks/ray-net", ip_cidr_range="10.20.0.0/24")
                   ).result()
    with pytest.raises(exceptions.BadRequest, match="conflicts with existing subnetwork"):
        subnets.insert(**P(fake), region=REGION, subnetwork_resource=c.Subnetwork(
            name="ray-sub2", network="global/networks/ray-net", ip_cidr_range="10.20.0.128/25"))
    vm = instance("net-vm")
    vm.network_interfaces[0].subnetwork = f"regions/{REGION}/subnetworks/ray-sub"
    fake.client(c.InstancesClient).insert(**P(fake), zone=ZONE, instance_resource=vm).result()
    nic = fake.client(c.InstancesClient).get(**P(fake), zone=ZONE,
                                            instance="net-vm").network_interfaces[0]
    assert nic.network == f"{API}/global/networks/ray-net" and nic.network_i_p == "10.20.0.2"
    with pytest.raises(exceptions.BadRequest, match="subnetworks/ray-sub"):
        networks.delete(**P(fake), network="ray-net")
    with pytest.raises(exceptions.BadRequest, match="instances/net-vm"):
        subnets.delete(**P(fake), region=REGION, subnetwork="ray-sub")
    fake.client(c.InstancesClient).delete(**P(fake), zone=ZONE, instance="net-vm").result()
    subnets.delete(**P(fake), region=REGION, subnetwork="ray-sub").result()
    networks.delete(**P(fake), network="ray-net").result()


# -- unmanaged instance groups -------------------------------------------------------------------

def add_to(groups, fake, group: str, *names: str, zone: str = ZONE, remove: bool = False):
    refs = [c.InstanceReference(instance=f"{API}/zones/{zone}/instances/{n}") for n in names]
    if remove:
        return groups.remove_instances(
            **P(fake), zone=ZONE, instance_group=group,
            instance_groups_remove_instances_request_resource=c.
            InstanceGroupsRemoveInstancesRequest(instances=refs))
    return groups.add_instances(
        **P(fake), zone=ZONE, instance_group=group,
        instance_groups_add_instances_request_resource=c.InstanceGroupsAddInstancesRequest(
            instances=refs))


def listed(groups, fake, group: str) -> dict:
    items = groups.list_instances(**P(fake), zone=ZONE, instance_group=group,
                                  instance_groups_list_instances_request_resource=c.
                                  InstanceGroupsListInstancesRequest(instance_state="ALL"))
    return {i.instance.rsplit("/", 1)[1]: (i.status, [(p.name, p.port) for p in i.named_ports])
            for i in items}


def test_unmanaged_group_members_named_ports_and_deleted_vms(fake):
    instances, groups = fake.client(c.InstancesClient), fake.client(c.InstanceGroupsClient)
    for name in ("um-a", "um-b"):
        instances.insert(**P(fake), zone=ZONE, instance_resource=instance(name)).result()
    groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
        name="um-head", network="global/networks/default", description="head",
        named_ports=[c.NamedPort(name="serve", port=8000)])).result()
    group = groups.get(**P(fake), zone=ZONE, instance_group="um-head")
    assert group.network == f"{API}/global/networks/default" and not group.subnetwork
    assert group.size == 0 and group.zone == f"{API}/zones/{ZONE}" and group.fingerprint
    assert listed(groups, fake, "um-head") == {}

    add_to(groups, fake, "um-head", "um-a").result()
    group = groups.get(**P(fake), zone=ZONE, instance_group="um-head")
    assert group.size == 1                                 # nic0's subnetwork is the group's now
    assert group.subnetwork == f"{API}/regions/{REGION}/subnetworks/default"
    with pytest.raises(exceptions.BadRequest) as again:
        add_to(groups, fake, "um-head", "um-a")
    assert again.value.errors[0]["reason"] == "memberAlreadyExists"
    assert again.value.message.endswith(
        f"Resource 'projects/test-project/zones/{ZONE}/instances/um-a' is already a member of "
        f"'projects/test-project/zones/{ZONE}/instanceGroups/um-head'.")
    with pytest.raises(exceptions.NotFound):
        add_to(groups, fake, "um-head", "um-ghost")

    token = str(uuid.uuid4())                              # a retried add acts once
    request = {"project": fake.project, "zone": ZONE, "instance_group": "um-head",
               "request_id": token, "instance_groups_add_instances_request_resource": {
                   "instances": [{"instance": f"zones/{ZONE}/instances/um-b"}]}}
    first = groups.add_instances(request=request)
    assert groups.add_instances(request=request).name == first.name
    first.result()
    assert listed(groups, fake, "um-head") == {"um-a": ("RUNNING", [("serve", 8000)]),
                                               "um-b": ("RUNNING", [("serve", 8000)])}
    assert [(g.name, g.size) for g in groups.list(
        request=req(fake, zone=ZONE, filter='name = "um-head"'))] == [("um-head", 2)]

    fp = groups.get(**P(fake), zone=ZONE, instance_group="um-head").fingerprint
    ports = c.InstanceGroupsSetNamedPortsRequest(
        named_ports=[c.NamedPort(name="serve", port=8000), c.NamedPort(name="dash", port=8265)],
        fingerprint=fp)
    groups.set_named_ports(**P(fake), zone=ZONE, instance_group="um-head",
                           instance_groups_set_named_ports_request_resource=ports).result()
    with pytest.raises(exceptions.PreconditionFailed):
        groups.set_named_ports(**P(fake), zone=ZONE, instance_group="um-head",
                               instance_groups_set_named_ports_request_resource=ports)
    assert listed(groups, fake, "um-head")["um-a"][1] == [("serve", 8000), ("dash", 8265)]

    add_to(groups, fake, "um-head", "um-b", remove=True).result()
    assert set(listed(groups, fake, "um-head")) == {"um-a"}
    with pytest.raises(exceptions.BadRequest, match="is not a member of"):
        add_to(groups, fake, "um-head", "um-b", remove=True)

    # deleting a VM takes it out of its groups; a new VM of the same name is not a member
    instances.delete(**P(fake), zone=ZONE, instance="um-a").result()
    assert groups.get(**P(fake), zone=ZONE, instance_group="um-head").size == 0
    instances.insert(**P(fake), zone=ZONE, instance_resource=instance("um-a")).result()
    assert listed(groups, fake, "um-head") == {}
    with pytest.raises(exceptions.NotFound):             # the VM itself is gone: 404
        add_to(groups, fake, "um-head", "um-gone", remove=True)

    groups.delete(**P(fake), zone=ZONE, instance_group="um-head").result()
    with pytest.raises(exceptions.NotFound):
        groups.get(**P(fake), zone=ZONE, instance_group="um-head")
    for name in ("um-a", "um-b"):                        # a group's deletion keeps its VMs
        instances.delete(**P(fake), zone=ZONE, instance=name).result()


def test_unmanaged_group_refuses_other_zones_networks_subnets_and_managed_groups(fake):
    instances, groups = fake.client(c.InstancesClient), fake.client(c.InstanceGroupsClient)
    networks, subnets = fake.client(c.NetworksClient), fake.client(c.SubnetworksClient)
    networks.insert(**P(fake), network_resource=c.Network(
        name="um-net", auto_create_subnetworks=False)).result()
    subnets.insert(**P(fake), region=REGION, subnetwork_resource=c.Subnetwork(
        name="um-net-sub", network="global/networks/um-net", ip_cidr_range="10.40.0.0/24")
                   ).result()
    subnets.insert(**P(fake), region=REGION, subnetwork_resource=c.Subnetwork(
        name="um-side", network="global/networks/default", ip_cidr_range="10.41.0.0/24")
                   ).result()
    vms = {"uz-ok": instance("uz-ok"), "uz-b": instance("uz-b", zone="us-central1-b"),
           "uz-net": instance("uz-net"), "uz-side": instance("uz-side")}
    vms["uz-net"].network_interfaces[0].subnetwork = f"regions/{REGION}/subnetworks/um-net-sub"
    vms["uz-side"].network_interfaces[0].subnetwork = f"regions/{REGION}/subnetworks/um-side"
    for name, vm in vms.items():
        zone = "us-central1-b" if name == "uz-b" else ZONE
        instances.insert(**P(fake), zone=zone, instance_resource=vm).result()

    groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
        name="uz-group", network="global/networks/default")).result()
    with pytest.raises(exceptions.BadRequest, match="zone"):
        add_to(groups, fake, "uz-group", "uz-b", zone="us-central1-b")
    with pytest.raises(exceptions.BadRequest) as wrong_net:
        add_to(groups, fake, "uz-group", "uz-net")
    assert wrong_net.value.errors[0]["reason"] == "wrongNetwork"
    add_to(groups, fake, "uz-group", "uz-ok").result()
    with pytest.raises(exceptions.BadRequest) as wrong_sub:
        add_to(groups, fake, "uz-group", "uz-side")
    assert wrong_sub.value.errors[0]["reason"] == "wrongSubnetwork"
    assert wrong_sub.value.message.endswith(
        f"Resource 'projects/test-project/zones/{ZONE}/instances/uz-side' is expected to be in "
        f"the subnetwork 'projects/test-project/regions/{REGION}/subnetworks/default' but is in "
        f"the subnetwork 'projects/test-project/regions/{REGION}/subnetworks/um-side'.")
    with pytest.raises(exceptions.BadRequest):            # one request, one instance twice
        groups.add_instances(request={
            "project": fake.project, "zone": ZONE, "instance_group": "uz-group",
            "instance_groups_add_instances_request_resource": {"instances": [
                {"instance": f"zones/{ZONE}/instances/uz-side"}] * 2}})

    # a group made with a subnetwork is in its network; its members must be in that subnetwork
    groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
        name="uz-sub", subnetwork=f"regions/{REGION}/subnetworks/um-side")).result()
    made = groups.get(**P(fake), zone=ZONE, instance_group="uz-sub")
    assert made.network == f"{API}/global/networks/default"
    with pytest.raises(exceptions.BadRequest, match="wrongSubnetwork|expected to be in"):
        add_to(groups, fake, "uz-sub", "uz-ok")
    with pytest.raises(exceptions.BadRequest, match="namedPorts\\[0\\].port"):
        groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
            name="uz-ports", named_ports=[c.NamedPort(name="serve", port=70000)]))

    # a group made without a network takes its members' network; until then no LB takes it
    groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
        name="uz-empty")).result()
    fake.client(c.HealthChecksClient).insert(**P(fake), health_check_resource=c.HealthCheck(
        name="uz-hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=8000))).result()
    services = fake.client(c.BackendServicesClient)
    with pytest.raises(exceptions.BadRequest, match="has no network"):
        services.insert(**P(fake), backend_service_resource=c.BackendService(
            name="uz-bs", health_checks=["global/healthChecks/uz-hc"],
            backends=[c.Backend(group=f"zones/{ZONE}/instanceGroups/uz-empty")]))
    add_to(groups, fake, "uz-empty", "uz-net").result()
    assert groups.get(**P(fake), zone=ZONE, instance_group="uz-empty").network == \
        f"{API}/global/networks/um-net"

    # a MIG's group: its members are the MIG's to change
    template(fake, "uz-tmpl")
    fake.client(c.InstanceGroupManagersClient).insert(
        **P(fake), zone=ZONE, instance_group_manager_resource=c.InstanceGroupManager(
            name="uz-mig", base_instance_name="uz-m", target_size=0,
            instance_template="global/instanceTemplates/uz-tmpl")).result()
    for remove in (False, True):
        with pytest.raises(exceptions.BadRequest, match="managed by the instance group manager"):
            add_to(groups, fake, "uz-mig", "uz-ok", remove=remove)
    assert fake.count("addInstances", "instanceGroups") >= 5
    # the API has no regionInstanceGroups.insert (no regional unmanaged groups)
    status, body = raw(fake, "POST", f"regions/{REGION}/instanceGroups", {"name": "uz-reg"})
    assert status == 501 and body["error"]["status"] == "UNIMPLEMENTED"

    fake.client(c.InstanceGroupManagersClient).delete(
        **P(fake), zone=ZONE, instance_group_manager="uz-mig").result()
    for name in ("uz-group", "uz-empty", "uz-sub"):
        groups.delete(**P(fake), zone=ZONE, instance_group=name).result()
    for name in vms:
        instances.delete(**P(fake), zone="us-central1-b" if name == "uz-b" else ZONE,
                         instance=name).result()
    subnets.delete(**P(fake), region=REGION, subnetwork="um-side").result()
    subnets.delete(**P(fake), region=REGION, subnetwork="um-net-sub").result()
    networks.delete(**P(fake), network="um-net").result()


# -- the flows of the GCP provider ---------------------------------------------------------------

def test_global_lb_over_a_regional_mig_and_an_unmanaged_head_group(fake):
    """What a Ray cluster on GCP builds: a head VM in an unmanaged group, workers in a regional
    MIG from a template with a startup script, both behind one EXTERNAL_MANAGED backend
    service with the ``serve`` named port, a URL map, an HTTP proxy and a forwarding rule."""
    script = "#!/bin/bash\nray start --address=10.128.0.2:6379\n"
    disk = c.AttachedDisk(boot=True, auto_delete=True,
                          initialize_params=c.AttachedDiskInitializeParams(
                              source_image="projects/debian-cloud/global/images/family/debian-12"))
    templates = fake.client(c.InstanceTemplatesClient)
    templates.insert(**P(fake), instance_template_resource=c.InstanceTemplate(
        name="ray-worker-tmpl", properties=c.InstanceProperties(
            machine_type="e2-standard-4", labels={"cluster": "ray", "role": "worker"},
            disks=[disk],
            network_interfaces=[c.NetworkInterface(network="global/networks/default")],
            metadata=c.Metadata(items=[c.Items(key="startup-script", value=script)])))).result()
    tmpl = templates.get(**P(fake), instance_template="ray-worker-tmpl")
    assert [(i.key, i.value) for i in tmpl.properties.metadata.items] == [
        ("startup-script", script)]
    with pytest.raises(exceptions.BadRequest, match="metadata.items\\[0\\].key"):
        templates.insert(**P(fake), instance_template_resource=c.InstanceTemplate(
            name="bad-meta", properties=c.InstanceProperties(
                machine_type="e2-small", disks=[disk],
                network_interfaces=[c.NetworkInterface(network="global/networks/default")],
                metadata=c.Metadata(items=[c.Items(key="startup script", value="x")]))))

    migs = fake.client(c.RegionInstanceGroupManagersClient)
    migs.insert(**P(fake), region=REGION, instance_group_manager_resource=c.InstanceGroupManager(
        name="ray-workers", base_instance_name="ray-worker", target_size=1,
        instance_template="global/instanceTemplates/ray-worker-tmpl",
        named_ports=[c.NamedPort(name="serve", port=8000)])).result()
    migs.resize(**P(fake), region=REGION, instance_group_manager="ray-workers", size=2).result()
    fake.settle_groups()
    mig = migs.get(**P(fake), region=REGION, instance_group_manager="ray-workers")
    assert mig.target_size == 2 and mig.status.is_stable
    worker = fake.client(c.InstancesClient).get(**P(fake), zone=ZONE, instance=next(
        m.name for m in migs.list_managed_instances(**P(fake), region=REGION,
                                                    instance_group_manager="ray-workers")
        if f"/zones/{ZONE}/" in m.instance))
    assert {i.key: i.value for i in worker.metadata.items}["startup-script"] == script

    instances, groups = fake.client(c.InstancesClient), fake.client(c.InstanceGroupsClient)
    instances.insert(**P(fake), zone=ZONE, instance_resource=instance("ray-head")).result()
    groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
        name="ray-head", network="global/networks/default",
        named_ports=[c.NamedPort(name="serve", port=8000)])).result()
    add_to(groups, fake, "ray-head", "ray-head").result()

    fake.client(c.HealthChecksClient).insert(**P(fake), health_check_resource=c.HealthCheck(
        name="ray-hc", type_="HTTP", http_health_check=c.HTTPHealthCheck(
            port_name="serve", request_path="/-/healthz"))).result()
    services = fake.client(c.BackendServicesClient)
    head_group = f"zones/{ZONE}/instanceGroups/ray-head"
    worker_group = f"regions/{REGION}/instanceGroups/ray-workers"

    def service(name, *backends):
        return c.BackendService(name=name, protocol="HTTP", port_name="serve", timeout_sec=120,
                                load_balancing_scheme="EXTERNAL_MANAGED",
                                health_checks=["global/healthChecks/ray-hc"],
                                backends=list(backends))
    refused = [
        (c.Backend(group=worker_group, balancing_mode="RATE"), "maxRate"),
        (c.Backend(group=worker_group, balancing_mode="CONNECTION"), "balancingMode"),
        (c.Backend(group=worker_group, max_rate=10, max_rate_per_instance=5.0),
         "Both maxRate or maxRatePerInstance cannot be set."),
        (c.Backend(group=f"regions/{REGION}/instanceGroupManagers/ray-workers"),
         "Unexpected resource collection 'instanceGroupManagers'."),
        (c.Backend(group=worker_group, capacity_scaler=0.05), "capacityScaler"),
    ]
    for backend, why in refused:
        with pytest.raises(exceptions.BadRequest, match=re.escape(why)):
            services.insert(**P(fake), backend_service_resource=service("ray-bs", backend))
    with pytest.raises(exceptions.BadRequest, match="Duplicate instance groups"):
        services.insert(**P(fake), backend_service_resource=service(
            "ray-bs", c.Backend(group=head_group), c.Backend(group=head_group)))
    services.insert(**P(fake), backend_service_resource=service(
        "ray-bs",
        c.Backend(group=worker_group, balancing_mode="RATE", max_rate_per_instance=50.0),
        c.Backend(group=head_group, balancing_mode="UTILIZATION"))).result()
    bs = services.get(**P(fake), backend_service="ray-bs")
    assert (bs.protocol, bs.port_name, bs.timeout_sec, bs.load_balancing_scheme) == (
        "HTTP", "serve", 120, "EXTERNAL_MANAGED")
    assert [(b.group, b.balancing_mode) for b in bs.backends] == [
        (f"{API}/{worker_group}", "RATE"), (f"{API}/{head_group}", "UTILIZATION")]
    assert bs.backends[0].max_rate_per_instance == 50.0
    assert bs.backends[1].max_utilization == pytest.approx(0.8)       # a float32 field

    fake.client(c.UrlMapsClient).insert(**P(fake), url_map_resource=c.UrlMap(
        name="ray-map", default_service="global/backendServices/ray-bs")).result()
    fake.client(c.TargetHttpProxiesClient).insert(
        **P(fake), target_http_proxy_resource=c.TargetHttpProxy(
            name="ray-proxy", url_map="global/urlMaps/ray-map")).result()
    rules = fake.client(c.GlobalForwardingRulesClient)
    with pytest.raises(exceptions.BadRequest, match="ports"):       # ports is for passthrough
        rules.insert(**P(fake), forwarding_rule_resource=c.ForwardingRule(
            name="ray-fr", target="global/targetHttpProxies/ray-proxy", ports=["80"],
            load_balancing_scheme="EXTERNAL_MANAGED"))
    rules.insert(**P(fake), forwarding_rule_resource=c.ForwardingRule(
        name="ray-fr", target="global/targetHttpProxies/ray-proxy", I_p_protocol="TCP",
        port_range="80", load_balancing_scheme="EXTERNAL_MANAGED",
        labels={"cluster": "ray"})).result()
    rule = rules.get(**P(fake), forwarding_rule="ray-fr")
    assert ipaddress.ip_address(rule.I_p_address) in ipaddress.ip_network("203.0.113.0/24")
    assert (rule.port_range, rule.I_p_protocol, rule.network_tier) == ("80-80", "TCP", "PREMIUM")

    with pytest.raises(exceptions.BadRequest) as in_use:
        groups.delete(**P(fake), zone=ZONE, instance_group="ray-head")
    assert in_use.value.errors[0]["reason"] == "resourceInUseByAnotherResource"
    assert "backendServices/ray-bs" in in_use.value.message

    # the head is replaced: out of the group, deleted, a new one in
    add_to(groups, fake, "ray-head", "ray-head", remove=True).result()
    instances.delete(**P(fake), zone=ZONE, instance="ray-head").result()
    instances.insert(**P(fake), zone=ZONE, instance_resource=instance("ray-head")).result()
    add_to(groups, fake, "ray-head", "ray-head").result()
    assert groups.get(**P(fake), zone=ZONE, instance_group="ray-head").size == 1

    rules.delete(**P(fake), forwarding_rule="ray-fr").result()
    fake.client(c.TargetHttpProxiesClient).delete(**P(fake), target_http_proxy="ray-proxy"
                                                  ).result()
    fake.client(c.UrlMapsClient).delete(**P(fake), url_map="ray-map").result()
    services.delete(**P(fake), backend_service="ray-bs").result()
    groups.delete(**P(fake), zone=ZONE, instance_group="ray-head").result()
    instances.delete(**P(fake), zone=ZONE, instance="ray-head").result()
    migs.delete(**P(fake), region=REGION, instance_group_manager="ray-workers").result()
    templates.delete(**P(fake), instance_template="ray-worker-tmpl").result()


def test_regional_passthrough_network_load_balancer(fake):
    instances, groups = fake.client(c.InstancesClient), fake.client(c.InstanceGroupsClient)
    instances.insert(**P(fake), zone=ZONE, instance_resource=instance("nlb-vm")).result()
    groups.insert(**P(fake), zone=ZONE, instance_group_resource=c.InstanceGroup(
        name="nlb-group", network="global/networks/default")).result()
    add_to(groups, fake, "nlb-group", "nlb-vm").result()
    fake.client(c.RegionHealthChecksClient).insert(
        **P(fake), region=REGION, health_check_resource=c.HealthCheck(
            name="nlb-hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=8000))).result()
    fake.client(c.HealthChecksClient).insert(**P(fake), health_check_resource=c.HealthCheck(
        name="nlb-global-hc", type_="TCP", tcp_health_check=c.TCPHealthCheck(port=8000))
    ).result()
    services = fake.client(c.RegionBackendServicesClient)
    group = f"zones/{ZONE}/instanceGroups/nlb-group"

    def service(backend=None, **fields):
        body = {"name": "nlb-bs", "load_balancing_scheme": "EXTERNAL", "protocol": "TCP",
                "health_checks": [f"regions/{REGION}/healthChecks/nlb-hc"],
                "backends": [backend or c.Backend(group=group, balancing_mode="CONNECTION")]}
        return c.BackendService(**{**body, **fields})
    refused = [(service(port_name="serve"), "portName"),
               (service(protocol="HTTP"), "TCP, UDP or UNSPECIFIED"),
               (service(health_checks=["global/healthChecks/nlb-global-hc"]), "regional health"),
               (service(c.Backend(group=group, balancing_mode="UTILIZATION")), "CONNECTION")]
    for body, why in refused:
        with pytest.raises(exceptions.BadRequest, match=why):
            services.insert(**P(fake), region=REGION, backend_service_resource=body)
    services.insert(**P(fake), region=REGION, backend_service_resource=service()).result()
    bs = services.get(**P(fake), region=REGION, backend_service="nlb-bs")
    assert bs.backends[0].balancing_mode == "CONNECTION" and not bs.port_name
    assert list(bs.health_checks) == [f"{API}/regions/{REGION}/healthChecks/nlb-hc"]

    rules = fake.client(c.ForwardingRulesClient)
    backend = f"regions/{REGION}/backendServices/nlb-bs"

    def rule(name, **fields):
        body = {"name": name, "load_balancing_scheme": "EXTERNAL", "I_p_protocol": "TCP",
                "backend_service": backend}
        return c.ForwardingRule(**{**body, **fields})
    for body, why in ((rule("nlb-fr", ports=["8000"], port_range="8000"), "mutually exclusive"),
                      (rule("nlb-fr", ports=[str(p) for p in range(8000, 8006)]), "five"),
                      (rule("nlb-fr", ports=["8000"], I_p_protocol="UDP"), "protocol is TCP"),
                      (rule("nlb-fr", ports=["8000"],
                            load_balancing_scheme="EXTERNAL_MANAGED"), "must match")):
        with pytest.raises(exceptions.BadRequest, match=why):
            rules.insert(**P(fake), region=REGION, forwarding_rule_resource=body)
    rules.insert(**P(fake), region=REGION,
                 forwarding_rule_resource=rule("nlb-fr", ports=["8000", "8265"])).result()
    rules.insert(**P(fake), region=REGION,
                 forwarding_rule_resource=rule("nlb-fr2", port_range="6379")).result()
    first = rules.get(**P(fake), region=REGION, forwarding_rule="nlb-fr")
    second = rules.get(**P(fake), region=REGION, forwarding_rule="nlb-fr2")
    assert list(first.ports) == ["8000", "8265"] and second.port_range == "6379-6379"
    assert first.backend_service == f"{API}/{backend}" and first.network_tier == "PREMIUM"
    for ip in (first.I_p_address, second.I_p_address):
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("198.51.100.0/24")
    assert first.I_p_address != second.I_p_address
    with pytest.raises(exceptions.BadRequest, match="forwardingRules/nlb-fr"):
        services.delete(**P(fake), region=REGION, backend_service="nlb-bs")

    for name in ("nlb-fr", "nlb-fr2"):
        rules.delete(**P(fake), region=REGION, forwarding_rule=name).result()
    services.delete(**P(fake), region=REGION, backend_service="nlb-bs").result()
    fake.client(c.RegionHealthChecksClient).delete(**P(fake), region=REGION,
                                                   health_check="nlb-hc").result()
    fake.client(c.HealthChecksClient).delete(**P(fake), health_check="nlb-global-hc").result()
    groups.delete(**P(fake), zone=ZONE, instance_group="nlb-group").result()
    instances.delete(**P(fake), zone=ZONE, instance="nlb-vm").result()
