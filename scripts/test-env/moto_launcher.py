"""Starts moto_server (moto 5.2.x) with the gaps that matter to comind-aws patched.

Used by the integration tests only, through comind-test-support
(test-support/src/moto.rs); product code never knows about any of this.
Usage: python3 moto_launcher.py -H 127.0.0.1 -p PORT

Each patch works around a place where moto 5.2.1 differs from AWS in a way the Rust
SDK or a correct client cannot cope with (see /work/research/moto.md):

1. S3 GetBucketVersioning answers with the root element
   <GetBucketVersioningResponse>; AWS (and the Rust SDK's parser, which checks the
   root) use <VersioningConfiguration>. Patched to answer like AWS.
2. ElastiCache DeleteReplicationGroup leaves the group `deleting` forever (and
   moto keeps its tags, which a new group of the same name would inherit). Patched
   so the group reads `deleting` once, then is gone with its tags, the way AWS
   finishes a deletion; that also exercises the wait for it.
3. ElastiCache DeleteCacheSubnetGroup is not served (HTTP 500). Patched in.
4. ElastiCache CreateReplicationGroup ignores NumCacheClusters for a group without
   cluster mode (only ReplicasPerNodeGroup adds replicas), so a group asked for
   with one replica would show none and look drifted forever. Patched to honour it.
5. Policy conditions: moto does not evaluate the `Bool` operator (unsupported
   operators count as holding), its request context has no `aws:SecureTransport`,
   and a statement whose condition fails answers DENIED whatever its Effect. So the
   bucket policy statement "deny when aws:SecureTransport is false" denies every
   request. Patched: requests carry aws:SecureTransport=true (the test server stands
   in for AWS's HTTPS endpoints, which is all real clients reach), `Bool` is
   evaluated, and a statement whose condition does not hold does not apply
   (NEUTRAL), as in IAM.

6. Presigned requests: moto picks a request's service from its Authorization
   header (or its body), never from the Host, so a presigned URL (signed in its
   query string, no header) is always taken for S3. AWS routes it by host. Patched
   to route an unsigned request by the credential scope of its X-Amz-Credential
   query parameter; that is how the presigned STS GetCallerIdentity inside an EKS
   token reaches moto's STS.

8. S3 CreateBucket ignores the tags of its CreateBucketConfiguration (AWS takes
   them for general purpose buckets, so a bucket is never untagged, not even for a
   moment). Patched: a bucket that the call creates gets those tags, as if tagged in
   the same call; a repeated create of an existing bucket leaves its tags alone.

9. EKS access entries, managed add-ons, Pod Identity associations, accessConfig,
   a cluster's vpcId, a merging UpdateClusterConfig and AssociateEncryptionConfig:
   not served by moto
   5.2, answered by moto_eks.py next to moto's clusters (its docstring says how,
   and where it differs from AWS on purpose).

And one addition that is not a gap but a test hook: moto makes everything available
at once, so the waiting code would never see a transitional status.

7. Scripted statuses. When COMIND_MOTO_SCRIPT names a JSON file such as
   {"db-instance:comind-w-postgres": ["creating", "backing-up", "available"]}, each
   DescribeDBInstances of that instance shows the next status of the list (the last
   one stays). The tests write the file; without it nothing changes.
"""

import json
import os
import sys
import threading
import urllib.parse

import xmltodict
from moto.core.responses import EmptyResult
from moto.elasticache import models as ec_models
from moto.elasticache import responses as ec_responses
from moto.iam import access_control
from moto.moto_server import werkzeug_app
from moto.elasticache.exceptions import (
    CacheSubnetGroupNotFound,
    ReplicationGroupNotFound,
)
from moto.rds import models as rds_models
from moto.s3 import responses as s3_responses

# 1. S3 GetBucketVersioning with AWS's root element.
_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _get_bucket_versioning(self):
    status = self.backend.get_bucket_versioning(self.bucket_name)
    self.data["Action"] = "GetBucketVersioning"
    inner = f"<Status>{status}</Status>" if status else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VersioningConfiguration xmlns="{_S3_NS}">{inner}</VersioningConfiguration>'
    )
    return 200, {"Content-Type": "application/xml"}, body


s3_responses.S3Response.get_bucket_versioning = _get_bucket_versioning

# 2. ElastiCache deletions that finish.
_Backend = ec_models.ElastiCacheBackend
_original_delete = _Backend.delete_replication_group
_original_describe = _Backend.describe_replication_groups


def _delete_replication_group(self, replication_group_id, retain_primary_cluster):
    group = _original_delete(self, replication_group_id, retain_primary_cluster)
    # Seen `deleting` by one more describe, then gone.
    group._comind_polls_left = 1
    return group


def _finish(self, group_id):
    group = self.replication_groups.pop(group_id)
    self.tagging_service.delete_all_tags_for_resource(group.arn)


def _describe_replication_groups(self, replication_group_id=None):
    for group_id, group in list(self.replication_groups.items()):
        if group.status != "deleting":
            continue
        if replication_group_id == group_id and getattr(group, "_comind_polls_left", 0) > 0:
            group._comind_polls_left -= 1
            continue
        _finish(self, group_id)
    if replication_group_id and replication_group_id not in self.replication_groups:
        raise ReplicationGroupNotFound(replication_group_id)
    return _original_describe(self, replication_group_id)


_Backend.delete_replication_group = _delete_replication_group
_Backend.describe_replication_groups = _describe_replication_groups

# 3. ElastiCache DeleteCacheSubnetGroup.


def _backend_delete_cache_subnet_group(self, cache_subnet_group_name):
    if cache_subnet_group_name not in self.cache_subnet_groups:
        raise CacheSubnetGroupNotFound(cache_subnet_group_name)
    group = self.cache_subnet_groups.pop(cache_subnet_group_name)
    self.tagging_service.delete_all_tags_for_resource(group.arn)
    return group


def _response_delete_cache_subnet_group(self):
    name = self._get_param("CacheSubnetGroupName")
    self.elasticache_backend.delete_cache_subnet_group(name)
    return EmptyResult()


_Backend.delete_cache_subnet_group = _backend_delete_cache_subnet_group
ec_responses.ElastiCacheResponse.delete_cache_subnet_group = (
    _response_delete_cache_subnet_group
)

# 4. NumCacheClusters honoured without cluster mode.
_Group = ec_models.ReplicationGroup
_original_members = _Group._set_node_members_clusters_disabled


def _set_node_members_clusters_disabled(self, *args, **kwargs):
    clusters = kwargs.get("num_cache_clusters")
    if not kwargs.get("replicas_per_node_group") and clusters and clusters > 1:
        kwargs["replicas_per_node_group"] = clusters - 1
    return _original_members(self, *args, **kwargs)


_Group._set_node_members_clusters_disabled = _set_node_members_clusters_disabled

# 5. Statements whose condition does not hold do not apply.
_Statement = access_control.IAMPolicyStatement
_original_permitted = _Statement.is_action_permitted
_original_conditions = _Statement._check_conditions


def _bool_holds(statement, context):
    """Whether every `Bool` condition of `statement` holds in `context`."""
    for key, expected in statement.get("Condition", {}).get("Bool", {}).items():
        wanted = expected if isinstance(expected, list) else [expected]
        actual = context.get(key)
        if actual is None or str(actual).lower() not in [str(w).lower() for w in wanted]:
            return False
    return True


def _is_action_permitted(
    self, action, resource="*", principal=None, incoming_condition_values=None
):
    context = {"aws:SecureTransport": "true", **(incoming_condition_values or {})}
    if self._statement.get("Condition") and not (
        _bool_holds(self._statement, context) and _original_conditions(self, context)
    ):
        return access_control.PermissionResult.NEUTRAL
    return _original_permitted(self, action, resource, principal, context)


_Statement.is_action_permitted = _is_action_permitted

# 6. Presigned requests routed by their credential scope.
_Dispatcher = werkzeug_app.DomainDispatcherApplication
_original_infer = _Dispatcher.infer_service_region_host


def _infer_service_region_host(self, environ, path):
    if not environ.get("HTTP_AUTHORIZATION"):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        credential = query.get("X-Amz-Credential", [""])[0]
        if credential.count("/") == 4:
            # Route as if it were signed in a header; the request itself is unchanged.
            routed = dict(environ)
            routed["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, "
                "Signature=0"
            )
            return _original_infer(self, routed, path)
    return _original_infer(self, environ, path)


_Dispatcher.infer_service_region_host = _infer_service_region_host

# 7. Scripted statuses.
_SCRIPT = os.environ.get("COMIND_MOTO_SCRIPT")
_SCRIPT_LOCK = threading.Lock()
_original_rds_describe = rds_models.RDSBackend.describe_db_instances


def _next_status(key):
    """Pops the next scripted status of `key`, keeping the last one; None if none."""
    if not _SCRIPT or not os.path.exists(_SCRIPT):
        return None
    with _SCRIPT_LOCK:
        with open(_SCRIPT) as f:
            script = json.load(f)
        steps = script.get(key)
        if not steps:
            return None
        if len(steps) > 1:
            script[key] = steps[1:]
            with open(_SCRIPT, "w") as f:
                json.dump(script, f)
        return steps[0]


def _describe_db_instances(self, db_instance_identifier=None, filters=None):
    found = _original_rds_describe(self, db_instance_identifier, filters)
    for db in found:
        status = _next_status(f"db-instance:{db.db_instance_identifier}")
        if status:
            db.status = status
    return found


rds_models.RDSBackend.describe_db_instances = _describe_db_instances

# 8. S3 CreateBucket with tags.
_original_bucket_put = s3_responses.S3Response._bucket_response_put


def _create_bucket_tags(body):
    """The tags of a CreateBucketConfiguration body, or None when it has none."""
    if not body:
        return None
    try:
        parsed = xmltodict.parse(body, force_list={"Tag": True})
    except Exception:  # noqa: BLE001 - not XML: moto's own handler reports it
        return None
    configuration = parsed.get("CreateBucketConfiguration") or {}
    listed = (configuration.get("Tags") or {}).get("Tag") or []
    return {t["Key"]: t.get("Value") or "" for t in listed if "Key" in t}


def _bucket_response_put(self, request, bucket_name, querystring):
    creating = not querystring and bucket_name not in self.backend.buckets
    result = _original_bucket_put(self, request, bucket_name, querystring)
    if creating and bucket_name in self.backend.buckets:
        tags = _create_bucket_tags(self.body)
        if tags:
            self.backend.put_bucket_tagging(bucket_name, tags)
    return result


s3_responses.S3Response._bucket_response_put = _bucket_response_put

# 9. The EKS APIs moto does not serve.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moto_eks  # noqa: E402

moto_eks.install(_Dispatcher, _next_status)

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
