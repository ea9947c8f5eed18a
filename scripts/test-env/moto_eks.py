"""The EKS APIs moto 5.2 does not serve, for comind-aws's tests (see moto_launcher.py).

moto 5.2.1 serves clusters, node groups and Fargate profiles, and nothing of access
entries, managed add-ons or Pod Identity associations; its UpdateClusterConfig
replaces the whole resourcesVpcConfig and ignores accessConfig, and it has no
AssociateEncryptionConfig. `install(app_class, next_status)` wraps moto's WSGI
dispatcher so that these requests are answered here, like AWS answers them, with
the state kept next to moto's own clusters (a deleted cluster takes its entries,
add-ons and associations with it, as on AWS). Everything else goes to moto.

What is served, and how it differs from AWS on purpose:
- Access entries (Create/Describe/List/Update/Delete) and their access policies
  (Associate/ListAssociated/Disassociate). A node group created on a cluster whose
  authenticationMode includes API gets an EC2_LINUX entry for its node role, made by
  "EKS" (untagged), as AWS makes it. bootstrapClusterCreatorAdminPermissions=true
  is not honoured (no entry for the creator); Comind sends false.
- Managed add-ons (DescribeAddonVersions from a small fixed catalog below, Create,
  Describe, List, Update, Delete). An add-on is ACTIVE at once, unless the status
  script (patch 7 of the launcher) names `eks-addon:<cluster>/<addon>`; a status of
  DEGRADED there also reports one health issue.
- Pod Identity associations (Create/Describe/List/Update/Delete).
- Tags of those three kinds of resources (TagResource, UntagResource,
  ListTagsForResource by ARN).
- UpdateClusterConfig merges resourcesVpcConfig and stores accessConfig (one way:
  API_AND_CONFIG_MAP -> API, as on AWS; CONFIG_MAP cannot be reached again);
  AssociateEncryptionConfig stores the cluster's encryptionConfig (once, as on AWS).
- CreateCluster answers (and DescribeCluster then shows) resourcesVpcConfig.vpcId,
  the VPC of the cluster's subnets, which moto leaves out.
"""

import io
import json
import re
import threading
import time
import urllib.parse
import uuid

from moto.eks import models as eks_models
from moto.iam.models import get_account_id_from

_LOCK = threading.Lock()
# (account, region, cluster) -> {"entries": {principal: entry}, "addons": {...},
# "associations": {id: association}}
_STATE = {}

# The catalog DescribeAddonVersions answers from: name -> versions, newest first;
# the first is the default for every Kubernetes version listed.
_KUBERNETES = ["1.33", "1.34", "1.35", "1.36"]
CATALOG = {
    "vpc-cni": ["v1.20.4-eksbuild.2", "v1.19.6-eksbuild.7"],
    "coredns": ["v1.12.4-eksbuild.1", "v1.11.4-eksbuild.24"],
    "kube-proxy": ["v1.35.0-eksbuild.2", "v1.34.1-eksbuild.2"],
    "eks-pod-identity-agent": ["v1.3.9-eksbuild.3", "v1.3.8-eksbuild.2"],
    "aws-ebs-csi-driver": ["v1.51.1-eksbuild.1", "v1.50.1-eksbuild.1"],
}

_ROUTES = [
    ("GET", r"^/addons/supported-versions$", "describe_addon_versions"),
    ("POST", r"^/clusters/([^/]+)/access-entries$", "create_access_entry"),
    ("GET", r"^/clusters/([^/]+)/access-entries$", "list_access_entries"),
    ("GET", r"^/clusters/([^/]+)/access-entries/([^/]+)$", "describe_access_entry"),
    ("POST", r"^/clusters/([^/]+)/access-entries/([^/]+)$", "update_access_entry"),
    ("DELETE", r"^/clusters/([^/]+)/access-entries/([^/]+)$", "delete_access_entry"),
    ("POST", r"^/clusters/([^/]+)/access-entries/([^/]+)/access-policies$", "associate_policy"),
    ("GET", r"^/clusters/([^/]+)/access-entries/([^/]+)/access-policies$", "list_policies"),
    (
        "DELETE",
        r"^/clusters/([^/]+)/access-entries/([^/]+)/access-policies/([^/]+)$",
        "disassociate_policy",
    ),
    ("POST", r"^/clusters/([^/]+)/addons$", "create_addon"),
    ("GET", r"^/clusters/([^/]+)/addons$", "list_addons"),
    ("GET", r"^/clusters/([^/]+)/addons/([^/]+)$", "describe_addon"),
    ("POST", r"^/clusters/([^/]+)/addons/([^/]+)/update$", "update_addon"),
    ("DELETE", r"^/clusters/([^/]+)/addons/([^/]+)$", "delete_addon"),
    ("POST", r"^/clusters/([^/]+)/pod-identity-associations$", "create_association"),
    ("GET", r"^/clusters/([^/]+)/pod-identity-associations$", "list_associations"),
    ("GET", r"^/clusters/([^/]+)/pod-identity-associations/([^/]+)$", "describe_association"),
    ("POST", r"^/clusters/([^/]+)/pod-identity-associations/([^/]+)$", "update_association"),
    ("DELETE", r"^/clusters/([^/]+)/pod-identity-associations/([^/]+)$", "delete_association"),
    ("POST", r"^/clusters/([^/]+)/update-config$", "update_cluster_config"),
    ("POST", r"^/clusters/([^/]+)/encryption-config/associate$", "associate_encryption"),
    ("GET", r"^/tags/(.+)$", "list_tags"),
    ("POST", r"^/tags/(.+)$", "tag"),
    ("DELETE", r"^/tags/(.+)$", "untag"),
]


class _Fail(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _not_found(message):
    return _Fail(404, "ResourceNotFoundException", message)


class _Request:
    def __init__(self, environ, next_status):
        self.method = environ["REQUEST_METHOD"]
        self.path = environ.get("PATH_INFO", "")
        self.query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        # Put back for moto, when the request turns out not to be ours.
        environ["wsgi.input"] = io.BytesIO(raw)
        self.body = json.loads(raw) if raw else {}
        scope = re.search(r"Credential=([^/]+)/\d+/([^/]+)/eks/", environ.get("HTTP_AUTHORIZATION", ""))
        self.account = get_account_id_from(scope.group(1)) if scope else "123456789012"
        self.region = scope.group(2) if scope else "us-east-1"
        self.next_status = next_status

    def arn(self, kind, rest):
        return f"arn:aws:eks:{self.region}:{self.account}:{kind}/{rest}"

    def moto_cluster(self, name, required=True):
        cluster = eks_models.eks_backends[self.account][self.region].clusters.get(name)
        if cluster is None and required:
            raise _not_found(f"No cluster found for name: {name}.")
        return cluster

    def state(self, cluster):
        self.moto_cluster(cluster)
        return _STATE.setdefault(
            (self.account, self.region, cluster),
            {"entries": {}, "addons": {}, "associations": {}},
        )

    # Access entries.
    def create_access_entry(self, cluster):
        entries = self.state(cluster)["entries"]
        principal = self.body["principalArn"]
        if principal in entries:
            raise _Fail(409, "ResourceInUseException", f"The specified access entry resource is already in use on this cluster.")
        entries[principal] = _entry(self, cluster, principal, self.body)
        return {"accessEntry": _public(entries[principal])}

    def list_access_entries(self, cluster):
        return {"accessEntries": sorted(self.state(cluster)["entries"])}

    def _entry(self, cluster, principal):
        entry = self.state(cluster)["entries"].get(principal)
        if entry is None:
            raise _not_found(f"The specified principalArn could not be found. You can view your available access entries with 'list-access-entries'.")
        return entry

    def describe_access_entry(self, cluster, principal):
        return {"accessEntry": _public(self._entry(cluster, principal))}

    def update_access_entry(self, cluster, principal):
        entry = self._entry(cluster, principal)
        if "kubernetesGroups" in self.body:
            entry["kubernetesGroups"] = self.body["kubernetesGroups"]
        if "username" in self.body:
            entry["username"] = self.body["username"]
        entry["modifiedAt"] = time.time()
        return {"accessEntry": _public(entry)}

    def delete_access_entry(self, cluster, principal):
        self._entry(cluster, principal)
        del self.state(cluster)["entries"][principal]
        return {}

    def associate_policy(self, cluster, principal):
        entry = self._entry(cluster, principal)
        policy = {
            "policyArn": self.body["policyArn"],
            "accessScope": self.body.get("accessScope") or {"type": "cluster"},
            "associatedAt": time.time(),
            "modifiedAt": time.time(),
        }
        entry["policies"][policy["policyArn"]] = policy
        return {"clusterName": cluster, "principalArn": principal, "associatedAccessPolicy": policy}

    def list_policies(self, cluster, principal):
        entry = self._entry(cluster, principal)
        return {
            "clusterName": cluster,
            "principalArn": principal,
            "associatedAccessPolicies": list(entry["policies"].values()),
        }

    def disassociate_policy(self, cluster, principal, policy):
        entry = self._entry(cluster, principal)
        if entry["policies"].pop(policy, None) is None:
            raise _not_found(f"The policy {policy} is not associated with {principal}.")
        return {}

    # Managed add-ons.
    def describe_addon_versions(self):
        names = self.query.get("addonName") or sorted(CATALOG)
        kubernetes = (self.query.get("kubernetesVersion") or [None])[0]
        addons = []
        for name in names:
            if name not in CATALOG or (kubernetes and kubernetes not in _KUBERNETES):
                continue
            versions = []
            for i, version in enumerate(CATALOG[name]):
                versions.append({
                    "addonVersion": version,
                    "architecture": ["amd64", "arm64"],
                    "compatibilities": [
                        {"clusterVersion": k, "platformVersions": ["*"], "defaultVersion": i == 0}
                        for k in _KUBERNETES
                        if not kubernetes or k == kubernetes
                    ],
                })
            addons.append({"addonName": name, "type": "networking", "owner": "aws", "addonVersions": versions})
        return {"addons": addons}

    def create_addon(self, cluster):
        addons = self.state(cluster)["addons"]
        name = self.body["addonName"]
        if name in addons:
            raise _Fail(409, "ResourceInUseException", f"Addon already exists.")
        version = self.body.get("addonVersion") or CATALOG.get(name, ["v1.0.0-eksbuild.1"])[0]
        if name not in CATALOG or version not in CATALOG[name]:
            raise _Fail(400, "InvalidParameterException", f"Addon version specified is not supported: {name} {version}")
        now = time.time()
        addons[name] = {
            "addonName": name,
            "clusterName": cluster,
            "status": "ACTIVE",
            "addonVersion": version,
            "health": {"issues": []},
            "addonArn": self.arn("addon", f"{cluster}/{name}/{uuid.uuid4()}"),
            "createdAt": now,
            "modifiedAt": now,
            "serviceAccountRoleArn": self.body.get("serviceAccountRoleArn"),
            "tags": self.body.get("tags") or {},
            "configurationValues": self.body.get("configurationValues"),
        }
        return {"addon": self._addon_seen(cluster, name)}

    def list_addons(self, cluster):
        return {"addons": sorted(self.state(cluster)["addons"])}

    def _addon_seen(self, cluster, name):
        addon = self.state(cluster)["addons"].get(name)
        if addon is None:
            raise _not_found(f"No addon: {name} found in cluster: {cluster}")
        status = self.next_status(f"eks-addon:{cluster}/{name}")
        if status:
            addon["status"] = status
            addon["health"] = {"issues": [] if status != "DEGRADED" else [{
                "code": "InsufficientNumberOfReplicas",
                "message": "The add-on is unhealthy because it doesn't have the desired number of replicas.",
                "resourceIds": [],
            }]}
        return {k: v for k, v in addon.items() if v is not None}

    def describe_addon(self, cluster, name):
        return {"addon": self._addon_seen(cluster, name)}

    def update_addon(self, cluster, name):
        addon = self.state(cluster)["addons"].get(name)
        if addon is None:
            raise _not_found(f"No addon: {name} found in cluster: {cluster}")
        for key in ("addonVersion", "serviceAccountRoleArn", "configurationValues"):
            if key in self.body:
                addon[key] = self.body[key]
        if addon["addonVersion"] not in CATALOG.get(name, []):
            raise _Fail(400, "InvalidParameterException", f"Addon version specified is not supported")
        addon["modifiedAt"] = time.time()
        return {"update": {"id": str(uuid.uuid4()), "status": "InProgress", "type": "AddonUpdate", "createdAt": time.time()}}

    def delete_addon(self, cluster, name):
        addon = self._addon_seen(cluster, name)
        del self.state(cluster)["addons"][name]
        return {"addon": dict(addon, status="DELETING")}

    # Pod Identity associations.
    def create_association(self, cluster):
        associations = self.state(cluster)["associations"]
        namespace, account = self.body["namespace"], self.body["serviceAccount"]
        if any(a["namespace"] == namespace and a["serviceAccount"] == account for a in associations.values()):
            raise _Fail(409, "ResourceInUseException", "Association already exists: a pod identity association for this service account exists")
        ident = "a-" + uuid.uuid4().hex[:17]
        now = time.time()
        associations[ident] = {
            "clusterName": cluster,
            "namespace": namespace,
            "serviceAccount": account,
            "roleArn": self.body["roleArn"],
            "associationArn": self.arn("podidentityassociation", f"{cluster}/{ident}"),
            "associationId": ident,
            "tags": self.body.get("tags") or {},
            "createdAt": now,
            "modifiedAt": now,
        }
        return {"association": associations[ident]}

    def list_associations(self, cluster):
        namespace = (self.query.get("namespace") or [None])[0]
        account = (self.query.get("serviceAccount") or [None])[0]
        found = [
            {k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")}
            for a in self.state(cluster)["associations"].values()
            if (not namespace or a["namespace"] == namespace) and (not account or a["serviceAccount"] == account)
        ]
        return {"associations": found}

    def _association(self, cluster, ident):
        found = self.state(cluster)["associations"].get(ident)
        if found is None:
            raise _not_found(f"Association {ident} not found.")
        return found

    def describe_association(self, cluster, ident):
        return {"association": self._association(cluster, ident)}

    def update_association(self, cluster, ident):
        association = self._association(cluster, ident)
        if "roleArn" in self.body:
            association["roleArn"] = self.body["roleArn"]
        association["modifiedAt"] = time.time()
        return {"association": association}

    def delete_association(self, cluster, ident):
        association = self._association(cluster, ident)
        del self.state(cluster)["associations"][ident]
        return {"association": association}

    # The cluster's own configuration.
    def update_cluster_config(self, name):
        cluster = self.moto_cluster(name)
        kinds = [k for k in ("resourcesVpcConfig", "logging", "accessConfig", "kubernetesNetworkConfig") if k in self.body]
        if len(kinds) != 1:
            raise _Fail(400, "InvalidParameterException", "Only one type of update can be allowed.")
        if "resourcesVpcConfig" in self.body:
            merged = dict(cluster.resources_vpc_config or {})
            merged.update(self.body["resourcesVpcConfig"])
            cluster.resources_vpc_config = merged
        if "logging" in self.body:
            cluster.logging = self.body["logging"]
        if "kubernetesNetworkConfig" in self.body:
            cluster.kubernetes_network_config = self.body["kubernetesNetworkConfig"]
        if "accessConfig" in self.body:
            mode = self.body["accessConfig"].get("authenticationMode")
            current = (getattr(cluster, "access_config", None) or {}).get("authenticationMode", "CONFIG_MAP")
            allowed = {"CONFIG_MAP": {"API_AND_CONFIG_MAP"}, "API_AND_CONFIG_MAP": {"API"}, "API": set()}
            if mode and mode != current and mode not in allowed.get(current, set()):
                raise _Fail(400, "InvalidParameterException", f"Unsupported authentication mode update from {current} to {mode}")
            cluster.access_config = dict(getattr(cluster, "access_config", None) or {}, authenticationMode=mode or current)
        return {"update": {"id": str(uuid.uuid4()), "status": "Successful", "type": _update_type(kinds[0]), "createdAt": time.time()}}

    def associate_encryption(self, name):
        cluster = self.moto_cluster(name)
        if cluster.encryption_config:
            raise _Fail(400, "InvalidParameterException", "Encryption is already enabled on the cluster")
        cluster.encryption_config = self.body["encryptionConfig"]
        return {"update": {"id": str(uuid.uuid4()), "status": "Successful", "type": "AssociateEncryptionConfig", "createdAt": time.time()}}

    # Tags of the resources above; anything else is moto's.
    def _tagged(self, arn):
        arn = urllib.parse.unquote(arn)
        for (account, region, _), state in _STATE.items():
            if (account, region) != (self.account, self.region):
                continue
            for kind in ("entries", "addons", "associations"):
                for item in state[kind].values():
                    if arn in (item.get("accessEntryArn"), item.get("addonArn"), item.get("associationArn")):
                        return item
        return None

    def list_tags(self, arn):
        item = self._tagged(arn)
        if item is None:
            return None
        return {"tags": item["tags"]}

    def tag(self, arn):
        item = self._tagged(arn)
        if item is None:
            return None
        item["tags"].update(self.body.get("tags") or {})
        return {}

    def untag(self, arn):
        item = self._tagged(arn)
        if item is None:
            return None
        for key in self.query.get("tagKeys", []):
            item["tags"].pop(key, None)
        return {}


def _update_type(kind):
    return {"resourcesVpcConfig": "EndpointAccessUpdate", "logging": "LoggingUpdate", "accessConfig": "AccessConfigUpdate"}.get(kind, "ConfigUpdate")


def _entry(request, cluster, principal, body):
    now = time.time()
    kind = body.get("type") or "STANDARD"
    return {
        "clusterName": cluster,
        "principalArn": principal,
        "kubernetesGroups": body.get("kubernetesGroups") or [],
        "accessEntryArn": request.arn("access-entry", f"{cluster}/{kind.lower()}/{uuid.uuid4()}"),
        "createdAt": now,
        "modifiedAt": now,
        "tags": body.get("tags") or {},
        "username": body.get("username") or principal,
        "type": kind,
        "policies": {},
    }


def _public(entry):
    return {k: v for k, v in entry.items() if k != "policies"}


def _nodegroup_entries(original):
    """Node groups on an API cluster get their node role's entry, as EKS makes it."""

    def create_nodegroup(self, cluster_name, node_role, *args, **kwargs):
        made = original(self, cluster_name, node_role, *args, **kwargs)
        cluster = self.clusters.get(cluster_name)
        mode = (getattr(cluster, "access_config", None) or {}).get("authenticationMode", "CONFIG_MAP")
        if cluster is not None and "API" in mode:
            with _LOCK:
                key = (self.account_id, self.region_name, cluster_name)
                state = _STATE.setdefault(key, {"entries": {}, "addons": {}, "associations": {}})
                if node_role not in state["entries"]:
                    fake = type("R", (), {"arn": lambda _s, k, r: f"arn:aws:eks:{self.region_name}:{self.account_id}:{k}/{r}"})()
                    state["entries"][node_role] = _entry(fake, cluster_name, node_role, {"type": "EC2_LINUX"})
                    state["entries"][node_role]["kubernetesGroups"] = ["system:nodes"]
                    state["entries"][node_role]["username"] = "system:node:{{EC2PrivateDNSName}}"
        return made

    return create_nodegroup


def _cluster_create(original):
    """CreateCluster keeps its accessConfig, which moto drops, and answers with the
    VPC of the cluster's subnets in resourcesVpcConfig.vpcId, as AWS does."""

    def create_cluster(self, name, *args, access_config=None, **kwargs):
        made = original(self, name, *args, **kwargs)
        made.access_config = {
            "authenticationMode": (access_config or {}).get("authenticationMode", "CONFIG_MAP"),
        }
        vpc_config = made.resources_vpc_config
        subnets = (vpc_config or {}).get("subnetIds") or []
        if subnets and "vpcId" not in vpc_config:
            from moto.ec2.models import ec2_backends

            try:
                subnet = ec2_backends[self.account_id][self.region_name].get_subnet(subnets[0])
                vpc_config["vpcId"] = subnet.vpc_id
            except Exception:  # an unknown subnet: AWS would refuse the create itself
                pass
        return made

    return create_cluster


def _cluster_delete(original):
    def delete_cluster(self, name):
        gone = original(self, name)
        with _LOCK:
            _STATE.pop((self.account_id, self.region_name, name), None)
        return gone

    return delete_cluster


def install(app_class, next_status):
    """Wraps `app_class.__call__` (moto's DomainDispatcherApplication)."""
    from moto.eks import responses as eks_responses

    eks_models.EKSBackend.create_nodegroup = _nodegroup_entries(eks_models.EKSBackend.create_nodegroup)
    eks_models.EKSBackend.create_cluster = _cluster_create(eks_models.EKSBackend.create_cluster)
    eks_models.EKSBackend.delete_cluster = _cluster_delete(eks_models.EKSBackend.delete_cluster)
    original_response_create = eks_responses.EKSResponse.create_cluster

    def response_create(self):
        # Hands accessConfig to the backend, which moto's own response drops.
        backend = self.eks_backend
        original_backend_create = backend.create_cluster
        access = self._get_param("accessConfig")
        backend.create_cluster = lambda *a, **k: original_backend_create(*a, access_config=access, **k)
        try:
            return original_response_create(self)
        finally:
            del backend.create_cluster

    eks_responses.EKSResponse.create_cluster = response_create
    original_call = app_class.__call__

    def call(self, environ, start_response):
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if "/eks/aws4_request" in authorization:
            answered = _answer(environ, start_response, next_status)
            if answered is not None:
                return answered
        return original_call(self, environ, start_response)

    app_class.__call__ = call


def _answer(environ, start_response, next_status):
    # The raw path: PATH_INFO is decoded, and an ARN in a label has its '/' encoded.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    method, path = environ["REQUEST_METHOD"], raw.split("?", 1)[0]
    for want, pattern, handler in _ROUTES:
        match = re.match(pattern, path)
        if want != method or not match:
            continue
        request = _Request(environ, next_status)
        args = [urllib.parse.unquote(g) for g in match.groups()]
        try:
            with _LOCK:
                body = getattr(request, handler)(*args)
        except _Fail as fail:
            start_response(f"{fail.status} Error", [("Content-Type", "application/json"), ("x-amzn-ErrorType", fail.kind)])
            return [json.dumps({"message": fail.message}).encode()]
        if body is None:
            # Not one of ours (tags of a cluster or node group): moto answers. The
            # body was read, so hand it back.
            return None
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
    return None
