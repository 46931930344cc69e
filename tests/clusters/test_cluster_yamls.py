"""The Ray cluster launcher YAMLs in clusters/: valid for the installed Ray, and right for this
project. Offline: no cloud SDK, no credentials, no network.

What `ray up` does with a config, and which of it runs here (read from ray/autoscaler/_private
in Ray 2.60):
  1. prepare_config: merges the provider's defaults.yaml (a file shipped in the wheel; for `local`,
     prepare_local builds the single node type from head_ip / worker_ips), merges setup commands,
     checks the docker section, fills per-type min/max workers. Pure Python, no cloud calls, for
     every provider: RUN HERE.
  2. provider_cls.fillout_available_node_types_resources: on AWS it calls EC2
     DescribeInstanceTypes to fill missing CPU/GPU counts (GCP fills nothing). NOT RUN; the
     YAMLs declare every node type's resources instead, and the tests below check them against
     the instance / machine types' real vCPU and GPU counts.
  3. validate_config: the JSON schema in ray/autoscaler/ray-schema.json plus cross-field checks
     (head_node_type among available_node_types, sum of min_workers <= max_workers). RUN HERE.
  4. provider_cls.bootstrap_config: bootstrap_aws / bootstrap_gcp create or look up IAM roles,
     key pairs, subnets, security groups (their modules import boto3 / googleapiclient at import
     time and call the cloud); bootstrap_local returns the config unchanged. Only bootstrap_local
     is RUN; of the cloud bootstraps the offline checks are re-done here: check_legacy_fields
     (imported from Ray), AWS _check_ami (an explicit AMI id on every node type) and GCP
     get_node_type (every node_config is a Compute instance: machineType present).
  The autoscaler's own planner (resource_demand_scheduler.get_nodes_for, pure Python) is then run
  on the prepared node types with the resource requests this project makes, to show that they can
  be scheduled: training never on the head, GPU trials on a GPU worker type.
Not covered offline: that AMI / image ids, instance types, accelerators, quotas, IAM profiles,
service accounts and the project id exist in the account; that setup commands succeed on the
image; spot capacity.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from ray.autoscaler._private.local.config import bootstrap_local
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, _fits, get_nodes_for
from ray.autoscaler._private.util import check_legacy_fields, prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
YAMLS = sorted(CLUSTERS.glob("*.yaml"))
CLOUD = {"aws", "gcp"}
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())

# Real vCPU / GPU counts of the instance types a config may use (extend when adding one).
AWS_INSTANCES = {  # InstanceType: (vCPUs, GPUs, Ray accelerator_type)
    "g5.xlarge": (4, 1, "A10G"), "g5.2xlarge": (8, 1, "A10G"), "g5.4xlarge": (16, 1, "A10G"),
    "g5.8xlarge": (32, 1, "A10G"), "g5.16xlarge": (64, 1, "A10G"), "g5.12xlarge": (48, 4, "A10G"),
    "g5.24xlarge": (96, 4, "A10G"), "g5.48xlarge": (192, 8, "A10G"),
    "g6.xlarge": (4, 1, "L4"), "g6.2xlarge": (8, 1, "L4"), "g6.12xlarge": (48, 4, "L4"), "g6.48xlarge": (192, 8, "L4"),
    "g4dn.xlarge": (4, 1, "T4"), "g4dn.2xlarge": (8, 1, "T4"), "g4dn.12xlarge": (48, 4, "T4"),
    "p3.2xlarge": (8, 1, "V100"), "p3.8xlarge": (32, 4, "V100"), "p4d.24xlarge": (96, 8, "A100"),
    "m5.xlarge": (4, 0, None), "m5.2xlarge": (8, 0, None), "m5.4xlarge": (16, 0, None),
}
GCP_ACCELERATORS = {"nvidia-l4": "L4", "nvidia-tesla-a100": "A100", "nvidia-a100-80gb": "A100",
                    "nvidia-tesla-t4": "T4", "nvidia-tesla-v100": "V100", "nvidia-h100-80gb": "H100"}
G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}  # g2-standard-<vCPUs>: L4 count


def gcp_machine(machine_type: str) -> tuple[int, int | None, str | None]:
    """(vCPUs, GPUs fixed by the machine type or None, accelerator it comes with or None)."""
    if m := re.fullmatch(r"g2-standard-(\d+)", machine_type):
        return int(m[1]), G2_GPUS[int(m[1])], "nvidia-l4"
    if m := re.fullmatch(r"a2-highgpu-(\d+)g", machine_type):
        return 12 * int(m[1]), int(m[1]), "nvidia-tesla-a100"
    if m := re.fullmatch(r"a2-ultragpu-(\d+)g", machine_type):
        return 12 * int(m[1]), int(m[1]), "nvidia-a100-80gb"
    if m := re.fullmatch(r"(?:n1|n2|e2)-(?:standard|highmem|highcpu)-(\d+)", machine_type):
        return int(m[1]), None, None  # N1 GPUs come only from guestAccelerators
    raise AssertionError(f"unknown GCP machine type {machine_type}: add it to gcp_machine()")


def load(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{path.name} is not a mapping"
    return raw


def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def gpu_worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in config["available_node_types"].items()
            if name != config["head_node_type"] and t["resources"].get("GPU", 0) > 0}


def plan(config: dict[str, Any], demands: list[dict[str, float]]) -> tuple[dict[str, int], list[dict[str, float]]]:
    """What the autoscaler would add to a cluster holding only the head, for these demands."""
    scorer = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    return get_nodes_for(config["available_node_types"], {config["head_node_type"]: 1}, config["head_node_type"],
                         config["max_workers"], demands, scorer)


params = pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])


def test_the_three_configs_exist():
    assert {p.stem for p in YAMLS} >= {"aws", "gcp", "local"}
    assert (CLUSTERS / "README.md").is_file()


@params
def test_parses_and_names_the_cluster(path):
    raw = load(path)
    assert isinstance(raw.get("cluster_name"), str) and raw["cluster_name"]
    assert raw["provider"]["type"] == ("local" if path.stem == "local" else path.stem)


@params
def test_ray_schema_and_launcher_validation(path):
    """Ray's JSON schema on the file as written, then the launcher's own preparation + validation."""
    raw = load(path)
    jsonschema.validate(raw, SCHEMA)
    config = prepared(raw)
    if raw["provider"]["type"] == "local":
        assert bootstrap_local(copy.deepcopy(config)) == config
    else:
        check_legacy_fields(config)  # the first step of bootstrap_aws / bootstrap_gcp
    for name, node_type in config["available_node_types"].items():
        assert node_type["min_workers"] <= node_type["max_workers"], name
    assert config["cluster_synced_files"] == [] and "auth" in config


def test_validation_is_not_vacuous():
    raw = load(CLUSTERS / "aws.yaml")
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5  # resources are integers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    broken = copy.deepcopy(raw)
    broken["head_node_type"] = "nonexistent"
    with pytest.raises(ValueError, match="head_node_type"):
        prepared(broken)


@pytest.mark.parametrize("name", sorted(CLOUD))
def test_cloud_head_runs_no_training_and_offers_train_driver(name):
    config = prepared(load(CLUSTERS / f"{name}.yaml"))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("train_driver", 0) >= 1
    assert head["max_workers"] == 0
    start = " ".join(config["head_start_ray_commands"])
    assert "--head" in start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in start
    assert "--dashboard-host=0.0.0.0" in start


@pytest.mark.parametrize("name", sorted(CLOUD))
def test_cloud_gpu_workers_autoscale_from_zero_with_consistent_resources(name):
    config = prepared(load(CLUSTERS / f"{name}.yaml"))
    workers = gpu_worker_types(config)
    assert len(workers) >= 2, "expected a 1-GPU and a multi-GPU worker type"
    spot = []
    for type_name, t in workers.items():
        res, node = t["resources"], t["node_config"]
        assert t["min_workers"] == 0, f"{type_name}: GPU workers must scale from zero"
        assert 1 <= t["max_workers"] <= config["max_workers"], type_name
        if name == "aws":
            assert node["InstanceType"] in AWS_INSTANCES, f"add {node['InstanceType']} to AWS_INSTANCES"
            vcpus, gpus, accelerator = AWS_INSTANCES[node["InstanceType"]]
            assert re.fullmatch(r"ami-[0-9a-f]{8,17}", node.get("ImageId", "")), f"{type_name}: explicit AMI id"
            assert "IamInstanceProfile" in node, f"{type_name}: workers need S3 access for storage"
            spot.append(node.get("InstanceMarketOptions", {}).get("MarketType") == "spot")
        else:
            vcpus, fixed_gpus, fixed_accelerator = gcp_machine(node["machineType"])
            accelerators = node.get("guestAccelerators", [])
            assert accelerators, f"{type_name}: GPU workers declare guestAccelerators"
            kinds = {a["acceleratorType"] for a in accelerators}
            assert len(kinds) == 1 and kinds <= GCP_ACCELERATORS.keys(), kinds
            (kind,) = kinds
            gpus = sum(a["acceleratorCount"] for a in accelerators)
            if fixed_gpus is not None:
                assert (gpus, kind) == (fixed_gpus, fixed_accelerator), \
                    f"{type_name}: {node['machineType']} comes with {fixed_gpus} x {fixed_accelerator}"
            accelerator = GCP_ACCELERATORS[kind]
            scheduling = node.get("scheduling", [])
            scheduling = scheduling if isinstance(scheduling, list) else [scheduling]
            assert any(s.get("onHostMaintenance") == "TERMINATE" for s in scheduling), \
                f"{type_name}: GPU VMs must not live-migrate"
            items = {i["key"]: i["value"] for i in node.get("metadata", {}).get("items", [])}
            assert items.get("install-nvidia-driver") == "True", type_name
            image = node["disks"][0]["initializeParams"]["sourceImage"]
            assert "deeplearning-platform-release" in image, f"{type_name}: a Deep Learning VM image"
            scopes = {s for acct in node.get("serviceAccounts", []) for s in acct.get("scopes", [])}
            assert scopes & {"https://www.googleapis.com/auth/cloud-platform",
                             "https://www.googleapis.com/auth/devstorage.read_write"}, \
                f"{type_name}: workers need GCS write access for storage"
            spot.append(any(s.get("provisioningModel") == "SPOT" or s.get("preemptible") for s in scheduling))
        assert res["GPU"] == gpus, f"{type_name}: declares {res['GPU']} GPUs, the machine has {gpus}"
        assert 1 <= res["CPU"] <= vcpus, f"{type_name}: declares {res['CPU']} CPUs, the machine has {vcpus}"
        declared = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
        assert declared in ([], [accelerator]), f"{type_name}: accelerator_type {declared} but the GPU is {accelerator}"
    assert any(spot), "at least one GPU worker type should use spot capacity"
    assert sum(t["min_workers"] for t in config["available_node_types"].values()) == 0


@pytest.mark.parametrize("name", sorted(CLOUD))
def test_autoscaler_plans_this_projects_requests(name):
    """The v1 autoscaler's planner, offline, on the requests the sweep makes."""
    config = prepared(load(CLUSTERS / f"{name}.yaml"))
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    workers = gpu_worker_types(config)
    # Training workers (resources.trial / pretrain: CPU + GPU per worker) never fit the head...
    assert not _fits(head, {"CPU": 1}) and not _fits(head, {"CPU": 1, "GPU": 1})
    # ...a trial driver pinned with {"train_driver": 0.01} does...
    assert _fits(head, {"train_driver": 0.01})
    # ...and the driver as the code requests it today, {"cpu": 0.01}, goes to a worker.
    added, left = plan(config, [{"CPU": 0.01}])
    assert not left and set(added) <= set(workers)
    # A 1-GPU trial with cpus_per_worker 3 (clusters/README.md) and its {"cpu": 0.01} driver
    # start one GPU node together.
    added, left = plan(config, [{"CPU": 0.01}, {"CPU": 3, "GPU": 1}])
    assert not left and sum(added.values()) == 1 and set(added) <= set(workers)
    # A 4-GPU trial packed on one node (one STRICT_PACK bundle) starts the multi-GPU type.
    added, left = plan(config, [{"CPU": 8, "GPU": 4}])
    assert not left and list(added) == [n for n, t in workers.items() if t["resources"]["GPU"] >= 4][:1]


def test_local_config_is_exactly_the_listed_machines():
    raw = load(CLUSTERS / "local.yaml")
    provider = raw["provider"]
    assert provider["head_ip"] and isinstance(provider["worker_ips"], list)
    assert "available_node_types" not in raw and "coordinator_address" not in provider
    config = prepared(raw)
    (node_type,) = config["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])
    assert "train_driver" in " ".join(config["head_start_ray_commands"])


@params
def test_syncs_and_installs_this_package(path):
    raw = load(path)
    config = prepared(raw)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # file_mounts: a remote folder <- the repository (relative paths are from where `ray up` runs:
    # the repository root, as clusters/README.md says).
    mounts = {remote: local for remote, local in raw["file_mounts"].items()
              if (ROOT / Path(local).expanduser()).resolve() == ROOT}
    assert len(mounts) == 1, f"file_mounts must map the repository root: {raw['file_mounts']}"
    (remote,) = mounts
    assert (ROOT / "pyproject.toml").is_file() and project["name"] == "robust-distill"
    # .gitignore'd files (.venv, runs/) are not synced.
    assert ".gitignore" in raw.get("rsync_filter", [])
    setup = config["head_setup_commands"]
    assert setup[:len(raw["setup_commands"])] == raw["setup_commands"]
    setup = "\n".join(raw["setup_commands"])
    assert re.search(r"--python 3\.11 (\S+)", setup), "creates a Python 3.11 venv"
    venv = re.search(r"--python 3\.11 (\S+)", setup)[1]
    install = [c for c in raw["setup_commands"] if "pip install" in c and "-e" in c.split()]
    assert len(install) == 1, "one `pip install -e` of the synced repository"
    assert f"{venv}/bin/pip install" in install[0] and f"-e {remote.rstrip('/')}" in install[0]
    # Ray pinned to one exact version, allowed by the package's own requirement.
    pins = re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', install[0])
    assert len(pins) == 1, "pin the cluster's Ray to the client's version"
    ray_req = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "ray")
    assert Version(pins[0]) in ray_req.specifier
    # Ray is started from the venv on every node.
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert f"source {venv}/bin/activate" in cmd, cmd


def test_all_configs_pin_the_same_ray():
    pins = {p.stem: re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', p.read_text()) for p in YAMLS}
    assert len({v for found in pins.values() for v in found}) == 1, pins
