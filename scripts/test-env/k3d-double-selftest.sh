#!/usr/bin/env bash
# Self-check of the k3d double (scripts/test-env/k3d) against the real Docker engine and
# the real control plane: every subcommand the double implements, its output and exit
# codes, and what it leaves in Docker. Takes about 1.5 minutes; cleans up after itself
# (containers, networks, volumes, processes and its state directory), also on failure.
#
#   scripts/test-env/k3d-double-selftest.sh        # prints `ok - ...` lines, exits 0 when all pass
#
# Environment: KUBEBUILDER_ASSETS (default: what ensure-kube.sh prints), K3D_SELFTEST_KEEP=1
# keeps the state directory for a post-mortem.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LOG_COLORS=false
KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$("$HERE/ensure-kube.sh" | tail -1)}"
export KUBEBUILDER_ASSETS
K3D="$("$HERE/ensure-k3d-double.sh" | tail -1)"
STATE="$(mktemp -d /tmp/k3d-double-selftest.XXXXXX)"
export K3D_DOUBLE_STATE="$STATE/state"
WORK="$STATE/work"
mkdir -p "$WORK"
ID="$$"
C1="st$ID"     # the main cluster (on a network of the test's own)
C2="st${ID}b"  # the watchdog cluster (on a network the double makes)
NET="k3d-selftest-net-$ID"
PASS=0

say() { printf '==> %s\n' "$*"; }
ok() {
    PASS=$((PASS + 1))
    printf 'ok %d - %s\n' "$PASS" "$*"
}
fail() {
    printf 'FAILED: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    for c in "$C1" "$C2" "${C1}x" "${C1}y"; do
        "$K3D" cluster delete "$c" >/dev/null 2>&1
        ids="$(docker ps -aq --filter "label=k3d.cluster=$c")"
        [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1
        docker volume rm -f "k3d-$c-images" >/dev/null 2>&1
        docker network rm "k3d-$c" >/dev/null 2>&1
    done
    docker network rm "$NET" >/dev/null 2>&1
    # processes of this run only: the pid files under our own state directory
    for f in "$K3D_DOUBLE_STATE"/clusters/*/*.pid; do
        [ -f "$f" ] || continue
        pid="$(cat "$f")"
        if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$K3D_DOUBLE_STATE"; then
            kill -9 "$pid" 2>/dev/null
        fi
    done
    if [ "$rc" -ne 0 ] || [ -n "${K3D_SELFTEST_KEEP:-}" ]; then
        echo "state kept in $STATE" >&2
    else
        rm -rf "$STATE"
    fi
    exit "$rc"
}
trap cleanup EXIT

free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# run CMD...: sets RC, OUT (stdout), ERR (stderr)
run() {
    set +e
    "$@" >"$WORK/out" 2>"$WORK/err"
    RC=$?
    set -e
    OUT="$(cat "$WORK/out")"
    ERR="$(cat "$WORK/err")"
}
expect_rc() {
    [ "$RC" -eq "$1" ] || fail "$2: exit code $RC, expected $1; stdout: $OUT; stderr: $ERR"
}
expect_err() {
    grep -qF -- "$1" "$WORK/err" || fail "$2: stderr lacks '$1': $ERR"
}
no_containers() {
    [ -z "$(docker ps -aq --filter "label=k3d.cluster=$1")" ] || fail "$2: containers of $1 left behind"
}
api() { # api PATH: GET with the admin token and the kubeconfig's CA
    curl -fsS --max-time 5 --cacert "$WORK/ca.crt" -H "Authorization: Bearer $(cat "$K3D_DOUBLE_STATE/clusters/$C1/admin.token")" \
        "https://127.0.0.1:$API_PORT$1" "${@:2}"
}

read -r API_PORT HTTP_PORT HTTPS_PORT API_PORT2 <<<"$(free_ports 4)"
docker network create --label "comind.dev/k3d-double-selftest=$ID" "$NET" >/dev/null

cat >"$WORK/k3d.yaml" <<EOF
apiVersion: k3d.io/v1alpha5
kind: Simple
metadata:
  name: $C1
servers: 1
agents: 2
image: docker.io/rancher/k3s:v1.32.5-k3s1
network: $NET
kubeAPI:
  hostIP: 127.0.0.1
  hostPort: "$API_PORT"
ports:
  - port: 127.0.0.1:$HTTP_PORT:80
    nodeFilters: [loadbalancer]
  - port: 127.0.0.1:$HTTPS_PORT:443
    nodeFilters: [loadbalancer]
registries:
  config: |
    mirrors:
      docker.io:
        endpoint:
          - http://selftest-registry:5000
options:
  k3d:
    wait: true
    timeout: 120s
  kubeconfig:
    updateDefaultKubeconfig: false
    switchCurrentContext: false
  runtime:
    labels:
      - label: comind.dev/selftest=$ID
        nodeFilters: [server:*, agent:*, loadbalancer]
EOF

# ---- version ---------------------------------------------------------------------
run "$K3D" version
expect_rc 0 "k3d version"
printf '%s\n' "$OUT" | grep -Eq '^k3d version v5\.[0-9]+\.[0-9]+$' || fail "k3d version line: $OUT"
printf '%s\n' "$OUT" | grep -Eq '^k3s version v1\.[0-9]+\.[0-9]+-k3s[0-9]+ \(default\)$' || fail "k3s version line: $OUT"
run "$K3D" --version
[ "$OUT" = "$("$K3D" version)" ] || fail "k3d --version differs from k3d version"
ok "version: '$(printf '%s' "$OUT" | head -1)' / '$(printf '%s' "$OUT" | tail -1)'"

# ---- invalid configs are rejected before anything is made -------------------------
sed 's/^kind: Simple/kind: Cluster/' "$WORK/k3d.yaml" >"$WORK/bad-kind.yaml"
run "$K3D" cluster create --config "$WORK/bad-kind.yaml"
expect_rc 1 "unknown kind"
expect_err 'Schema Validation failed' "unknown kind"
expect_err 'kind: kind must be one of the following: ' "unknown kind"
sed 's/^servers: 1/servers: 1\nworkers: 2/' "$WORK/k3d.yaml" >"$WORK/bad-field.yaml"
run "$K3D" cluster create -c "$WORK/bad-field.yaml"
expect_rc 1 "unknown field"
expect_err 'Additional property workers is not allowed' "unknown field"
sed 's/^apiVersion: .*/apiVersion: k3d.io\/v1beta9/' "$WORK/k3d.yaml" >"$WORK/bad-version.yaml"
run "$K3D" cluster create -c "$WORK/bad-version.yaml"
expect_rc 1 "unknown apiVersion"
expect_err "unsupported apiVersion 'k3d.io/v1beta9'" "unknown apiVersion"
sed 's/nodeFilters: \[server:\*, agent:\*, loadbalancer\]/nodeFilters: [agent:7]/' "$WORK/k3d.yaml" >"$WORK/bad-filter.yaml"
run "$K3D" cluster create -c "$WORK/bad-filter.yaml"
expect_rc 1 "invalid node filter"
expect_err "Index out of range: index '7'" "invalid node filter"
sed "s/127.0.0.1:$HTTP_PORT:80/127.0.0.1:$HTTP_PORT:http/" "$WORK/k3d.yaml" >"$WORK/bad-port.yaml"
run "$K3D" cluster create -c "$WORK/bad-port.yaml"
expect_rc 1 "unparsable port"
expect_err "error parsing port spec '127.0.0.1:$HTTP_PORT:http': invalid containerPort: http" "unparsable port"
no_containers "$C1" "rejected configs"
ok "invalid configs rejected with k3d's messages, exit 1, nothing created"

# ---- create --------------------------------------------------------------------------
say "cluster create $C1 (1 server, 2 agents) on $NET, API on 127.0.0.1:$API_PORT"
run "$K3D" cluster create --config "$WORK/k3d.yaml"
expect_rc 0 "cluster create"
printf '%s\n' "$OUT" | grep -q "Cluster '$C1' created successfully!" || fail "create output: $OUT"
ok "cluster create"

for n in server-0 agent-0 agent-1 serverlb; do
    c="k3d-$C1-$n"
    [ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || fail "$c not running"
    [ "$(docker inspect -f '{{.Config.Image}}' "$c")" = comind-test/k3s-node:r1 ] || fail "$c image"
    for l in "app=k3d" "k3d.cluster=$C1" "k3d.version=v5.9.0" "k3d.cluster.network=$NET" \
        "k3d.cluster.network.external=true" "k3d.cluster.imageVolume=k3d-$C1-images" "comind.dev/selftest=$ID"; do
        k="${l%%=*}"
        v="${l#*=}"
        [ "$(docker inspect -f "{{index .Config.Labels \"$k\"}}" "$c")" = "$v" ] || fail "$c label $l"
    done
    docker inspect -f "{{range \$k, \$v := .NetworkSettings.Networks}}{{\$k}} {{end}}" "$c" | grep -qw "$NET" || fail "$c not on $NET"
done
[ "$(docker inspect -f '{{index .Config.Labels "k3d.role"}}' "k3d-$C1-serverlb")" = loadbalancer ] || fail "lb role"
[ "$(docker inspect -f '{{index .Config.Labels "k3d.role"}}' "k3d-$C1-agent-1")" = agent ] || fail "agent role"
[ "$(docker inspect -f '{{index .Config.Labels "k3d.server.api.port"}}' "k3d-$C1-server-0")" = "$API_PORT" ] || fail "api port label"
[ "$(docker port "k3d-$C1-serverlb" 80/tcp)" = "127.0.0.1:$HTTP_PORT" ] || fail "80/tcp not published on the lb"
[ "$(docker port "k3d-$C1-serverlb" 443/tcp)" = "127.0.0.1:$HTTPS_PORT" ] || fail "443/tcp not published on the lb"
[ "$(docker volume inspect -f '{{index .Labels "k3d.cluster"}} {{index .Labels "app"}}' "k3d-$C1-images")" = "$C1 k3d" ] || fail "image volume labels"
for n in server-0 agent-0 agent-1; do
    docker exec "k3d-$C1-$n" cat /etc/rancher/k3s/registries.yaml | grep -q 'http://selftest-registry:5000' ||
        fail "registries.yaml in k3d-$C1-$n"
done
cmp -s "$WORK/k3d.yaml" "$K3D_DOUBLE_STATE/clusters/$C1/config.yaml" || fail "config copy differs"
ok "Docker side: 4 containers with k3d's names and labels on $NET, ports on the lb, image volume, registries.yaml; config recorded"

# ---- cluster list -o json ---------------------------------------------------------
run "$K3D" cluster list -o json
expect_rc 0 "cluster list -o json"
printf '%s' "$OUT" | python3 -c '
import json, sys
name, net, api = sys.argv[1], sys.argv[2], sys.argv[3]
cl = [c for c in json.load(sys.stdin) if c["name"] == name]
assert len(cl) == 1, cl
c = cl[0]
assert (c["serversCount"], c["serversRunning"], c["agentsCount"], c["agentsRunning"]) == (1, 1, 2, 2), c
assert c["hasLoadbalancer"] is True and c["imageVolume"] == "k3d-%s-images" % name, c
assert c["network"]["name"] == net and c["network"]["isExternal"] is True, c["network"]
assert "clusterToken" not in c and c["InitNode"] is None
roles = sorted(n["role"] for n in c["nodes"])
assert roles == ["agent", "agent", "loadbalancer", "server"], roles
for n in c["nodes"]:
    assert n["State"] == {"Running": True, "Status": "running", "Started": ""}, n["State"]
    assert n["runtimeLabels"]["k3d.cluster"] == name and n["Networks"][0] == net and n["IP"]["IP"], n
lb = [n for n in c["nodes"] if n["role"] == "loadbalancer"][0]
assert lb["portMappings"]["6443/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": api}], lb["portMappings"]
srv = [n for n in c["nodes"] if n["role"] == "server"][0]
assert srv["serverOpts"]["kubeAPI"] == {"Port": "", "Binding": {"HostIp": "127.0.0.1", "HostPort": api}, "host": "127.0.0.1"}, srv
' "$C1" "$NET" "$API_PORT" || fail "cluster list -o json shape: $OUT"
run "$K3D" cluster list "$C1" --output json
expect_rc 0 "cluster list NAME"
printf '%s' "$OUT" | python3 -c '
import json, sys
c = json.load(sys.stdin)[0]
lb = c["serverLoadBalancer"]
assert lb["name"].endswith("-serverlb") and sorted(lb["config"]["ports"]) == ["443.tcp", "6443.tcp", "80.tcp"], lb
assert lb["config"]["settings"] == {"workerConnections": 1024}
assert c["volumes"] == ["k3d-%s-images" % sys.argv[1]], c.get("volumes")
' "$C1" || fail "cluster list NAME -o json: $OUT"
ok "cluster list -o json / list NAME -o json: k3d's shape, counts 1/1 2/2, lb config, volumes"

# ---- kubeconfig get + the API server ------------------------------------------------
run "$K3D" kubeconfig get "$C1"
expect_rc 0 "kubeconfig get"
printf '%s' "$OUT" >"$WORK/kubeconfig"
python3 - "$WORK" "$C1" "$API_PORT" <<'EOF' || fail "kubeconfig shape"
import base64, sys, yaml
work, name, port = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(work + "/kubeconfig")) if d]
assert len(docs) == 1
kc = docs[0]
assert kc["current-context"] == "k3d-" + name
assert kc["clusters"][0]["name"] == "k3d-" + name
assert kc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:" + port
assert kc["contexts"][0] == {"name": "k3d-" + name, "context": {"cluster": "k3d-" + name, "user": "admin@k3d-" + name}}
u = kc["users"][0]
assert u["name"] == "admin@k3d-" + name
open(work + "/ca.crt", "wb").write(base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]))
open(work + "/admin.crt", "wb").write(base64.b64decode(u["user"]["client-certificate-data"]))
open(work + "/admin.key", "wb").write(base64.b64decode(u["user"]["client-key-data"]))
EOF
[ "$(head -1 "$WORK/kubeconfig")" = "---" ] || fail "kubeconfig get starts with ---"
api /api/v1/nodes | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
ready = sorted(n["metadata"]["name"] for n in items
               if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]))
want = sorted("k3d-%s-%s" % (sys.argv[1], n) for n in ("server-0", "agent-0", "agent-1"))
assert ready == want, (ready, want)
' "$C1" || fail "3 Ready nodes"
curl -fsS --max-time 5 --cacert "$WORK/ca.crt" --cert "$WORK/admin.crt" --key "$WORK/admin.key" \
    "https://127.0.0.1:$API_PORT/api/v1/nodes" >/dev/null || fail "client certificate from the kubeconfig"
api /apis/apps/v1/namespaces/kube-system/deployments/coredns | python3 -c '
import json, sys
s = json.load(sys.stdin)["status"]
assert s.get("availableReplicas") == 1 and any(c["type"] == "Available" and c["status"] == "True" for c in s["conditions"]), s
' || fail "coredns available"
api /apis/networking.k8s.io/v1/ingressclasses/traefik >/dev/null || fail "IngressClass traefik"
for _ in $(seq 1 50); do api /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1 && break; sleep 0.2; done
api /api/v1/namespaces/default/serviceaccounts/default >/dev/null || fail "default ServiceAccount"
ok "kubeconfig get: k3d-$C1 / admin@k3d-$C1 on https://127.0.0.1:$API_PORT; 3 Ready nodes (token and client cert); CoreDNS available; IngressClass traefik"

# ---- failures: exists, port taken ---------------------------------------------------
run "$K3D" cluster create --config "$WORK/k3d.yaml"
expect_rc 1 "create again"
expect_err "Failed to create cluster '$C1' because a cluster with that name already exists" "create again"
ok "create again: exit 1, 'a cluster with that name already exists'"

sed "s/name: $C1\$/name: ${C1}x/; s/127.0.0.1:$HTTP_PORT:80/127.0.0.1:0:80/; s/127.0.0.1:$HTTPS_PORT:443/127.0.0.1:0:443/" \
    "$WORK/k3d.yaml" >"$WORK/taken-api.yaml"
run "$K3D" cluster create --config "$WORK/taken-api.yaml"
expect_rc 1 "API port taken"
expect_err "127.0.0.1:$API_PORT: bind: address already in use" "API port taken"
expect_err "Cluster creation FAILED, all changes have been rolled back!" "API port taken"
no_containers "${C1}x" "API port taken"
sed "s/name: $C1\$/name: ${C1}y/; s/hostPort: \"$API_PORT\"/hostPort: \"$API_PORT2\"/" "$WORK/k3d.yaml" >"$WORK/taken-port.yaml"
run "$K3D" cluster create --config "$WORK/taken-port.yaml"
expect_rc 1 "ports entry taken"
expect_err "failed programming external connectivity on endpoint k3d-${C1}y-serverlb" "ports entry taken"
expect_err "Cluster creation FAILED, all changes have been rolled back!" "ports entry taken"
no_containers "${C1}y" "ports entry taken"
[ -z "$(docker volume ls -q --filter "label=k3d.cluster=${C1}y")" ] || fail "volume left after rollback"
ok "port taken (kube API, ports entry): exit 1, Docker's bind error, rolled back"

# ---- what was recorded ------------------------------------------------------------------
python3 - "$K3D_DOUBLE_STATE" "$C1" <<'EOF' || fail "records"
import json, os, sys
state, name = sys.argv[1:]
calls = [json.loads(l) for l in open(os.path.join(state, "calls.log"))]
assert all(isinstance(c, list) for c in calls) and ["version"] in calls, calls
creates = [c for c in calls if c[:2] == ["cluster", "create"]]
assert len(creates) == 9, creates
rec = json.load(open(os.path.join(state, "clusters", name, "cluster.json")))
assert rec["kubeconfig"] == {"updateDefaultKubeconfig": False, "switchCurrentContext": False}, rec["kubeconfig"]
edits = os.path.join(state, "kubeconfig-edits.log")
assert not os.path.exists(edits) or not any(json.loads(l)["action"] == "merge" for l in open(edits))
EOF
ok "calls.log has one JSON argv per call; updateDefaultKubeconfig=false recorded, no kubeconfig edit"

# ---- stop / start -----------------------------------------------------------------------
api /api/v1/namespaces/default/configmaps -X POST -H 'Content-Type: application/json' \
    -d '{"metadata":{"name":"selftest"},"data":{"kept":"yes"}}' >/dev/null || fail "create a ConfigMap"
run "$K3D" cluster stop "$C1"
expect_rc 0 "cluster stop"
[ "$("$K3D" cluster list -o json | python3 -c 'import json,sys; c=[x for x in json.load(sys.stdin) if x["name"]==sys.argv[1]][0]; print(c["serversRunning"], c["agentsRunning"])' "$C1")" = "0 0" ] ||
    fail "list after stop"
! curl -sS --max-time 2 -o /dev/null "https://127.0.0.1:$API_PORT/" 2>/dev/null || fail "API still answers after stop"
ok "cluster stop: containers stopped (list 0/1 0/2), API server down"
run "$K3D" cluster start "$C1"
expect_rc 0 "cluster start"
[ "$(api /api/v1/namespaces/default/configmaps/selftest | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["kept"])')" = yes ] ||
    fail "data kept across stop/start"
[ "$(api /api/v1/nodes | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["items"] for c in n["status"]["conditions"] if c["type"]=="Ready" and c["status"]=="True"))')" = 3 ] ||
    fail "3 Ready nodes after start"
ok "cluster start: containers and API server back, data kept, 3 Ready nodes"

# ---- delete -------------------------------------------------------------------------------
run "$K3D" cluster delete "$C1"
expect_rc 0 "cluster delete"
no_containers "$C1" "delete"
[ -z "$(docker volume ls -q --filter "label=k3d.cluster=$C1")" ] || fail "image volume left after delete"
docker network inspect "$NET" >/dev/null 2>&1 || fail "delete removed the external network"
! pgrep -f "__supervise $C1 " >/dev/null || fail "supervisor still running after delete"
[ ! -d "$K3D_DOUBLE_STATE/clusters/$C1/etcd" ] || fail "etcd data left after delete"
run "$K3D" cluster delete "$C1"
expect_rc 0 "delete of a missing cluster"
printf '%s\n' "$OUT" | grep -q "No nodes found for cluster '$C1', nothing to delete." || fail "delete missing: $OUT"
ok "cluster delete: containers, volume, control plane and data gone, external network kept; delete again exits 0"

run "$K3D" kubeconfig get "$C1"
expect_rc 1 "kubeconfig get of an unknown cluster"
expect_err "No nodes found for given cluster" "kubeconfig get unknown"
run "$K3D" cluster start "$C1"
expect_rc 1 "start of an unknown cluster"
expect_err "No nodes found for given cluster" "start unknown"
run "$K3D" cluster list "$C1" -o json
expect_rc 1 "list of an unknown cluster"
run "$K3D" node list
expect_rc 2 "unimplemented command"
expect_err 'k3d double: `node list` is not implemented' "unimplemented command"
ok "unknown cluster: exit 1 'No nodes found for given cluster'; unimplemented commands exit 2"

# ---- the watchdog --------------------------------------------------------------------------
cat >"$WORK/k3d-b.yaml" <<EOF
apiVersion: k3d.io/v1alpha5
kind: Simple
metadata:
  name: $C2
agents: 2
kubeAPI:
  hostIP: 127.0.0.1
options:
  kubeconfig:
    updateDefaultKubeconfig: true
    switchCurrentContext: true
EOF
say "cluster create $C2 (the double makes network k3d-$C2, random API port)"
run "$K3D" cluster create -c "$WORK/k3d-b.yaml"
expect_rc 0 "create $C2"
docker network inspect "k3d-$C2" >/dev/null || fail "network k3d-$C2 not made"
port2="$(docker inspect -f '{{index .Config.Labels "k3d.server.api.port"}}' "k3d-$C2-server-0")"
grep -q "\"action\": \"merge\", \"cluster\": \"$C2\"" "$K3D_DOUBLE_STATE/kubeconfig-edits.log" || fail "kubeconfig merge not recorded"
grep -q "server: https://127.0.0.1:$port2" "$K3D_DOUBLE_STATE/default-kubeconfig.yaml" || fail "stand-in kubeconfig"
pids="$(cat "$K3D_DOUBLE_STATE/clusters/$C2"/*.pid)"
docker rm -f "k3d-$C2-server-0" >/dev/null
gone=""
for _ in $(seq 1 50); do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    if [ "$alive" -eq 0 ]; then
        gone=1
        break
    fi
    sleep 0.2
done
[ -n "$gone" ] || fail "control plane still running 10 s after docker rm -f of server-0"
! curl -sS --max-time 2 -o /dev/null "https://127.0.0.1:$port2/" 2>/dev/null || fail "API answers after server-0 removal"
run "$K3D" cluster delete "$C2"
expect_rc 0 "delete $C2"
! docker network inspect "k3d-$C2" >/dev/null 2>&1 || fail "network k3d-$C2 left after delete"
ok "watchdog: docker rm -f server-0 stops the control plane within 10 s; delete removes the network it made"

say "all $PASS checks passed"
