#!/usr/bin/env bash
# One Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) shared
# by the test processes of one test binary, and its watchdog.
#
#   kube-peer.sh DIR BINDIR ETCD_PORT API_PORT
#
# Started detached by `comind_test_support::kube` (never by hand, though it works by
# hand too). nextest runs every test in a process of its own, so no single test
# process can own the control plane: each registers itself as a lease file
# DIR/leases/PID, and this script stops everything it started once no leased process
# has been alive for a few seconds. Startup takes about 2 seconds, once per binary.
#
# In DIR it writes: certs/ (the serving certificate is certs/apiserver.crt),
# tokens.csv and tokens/USER (bearer tokens of the test users), kubeconfig (admin,
# system:masters), etcd.log, kube-apiserver.log, kube-controller-manager.log, and
# finally `ready` (or `failed`, holding the reason).
#
# The users, for RBAC proofs (all but admin are subject to RBAC):
#   admin  system:masters        alice  platform:admin
#   dave   platform:developer    rita   platform:readonly
#   nobody (no group)
set -uo pipefail

dir="$1"
bin="$2"
etcd_port="$3"
api_port="$4"
# How long the control plane outlives the last test process that leased it.
idle_grace="${COMIND_KUBE_PEER_GRACE:-5}"

mkdir -p "$dir/certs" "$dir/leases" "$dir/tokens"
echo $$ >"$dir/supervisor.pid"

pids=()
stop() {
    # SIGKILL, in reverse order of start: the data is thrown away anyway, and a
    # graceful API server shutdown waits a minute for an etcd that is gone.
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -9 "${pids[i]}" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    # A newer supervisor may own the directory by now: leave its files alone.
    if [[ "$(cat "$dir/supervisor.pid" 2>/dev/null)" == "$$" ]]; then
        rm -f "$dir/ready" "$dir/supervisor.pid"
    fi
}
trap stop EXIT
trap 'exit 0' TERM INT

failed() {
    echo "$*" >"$dir/failed"
    exit 1
}

# Waits until `curl ARGS` succeeds, for at most $1 tenths of a second.
until_ok() {
    local tries="$1"
    shift
    for _ in $(seq 1 "$tries"); do
        curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

command -v openssl >/dev/null || failed "openssl is needed to make the service-account key: apt-get install -y openssl"
command -v flock >/dev/null || failed "flock is needed to stop the control plane safely: apt-get install -y util-linux"
command -v curl >/dev/null || failed "curl is needed to check the control plane answers: apt-get install -y curl"
for b in etcd kube-apiserver kube-controller-manager; do
    [[ -x "$bin/$b" ]] || failed "no executable $bin/$b (run scripts/test-env/ensure-kube.sh)"
done

openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null || failed "openssl genrsa failed"
openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null || failed "openssl rsa failed"

: >"$dir/tokens.csv"
token_for() {
    local user="$1" groups="$2" token
    token="$(openssl rand -hex 16)"
    echo "$token,$user,$user,\"$groups\"" >>"$dir/tokens.csv"
    printf '%s' "$token" >"$dir/tokens/$user"
}
token_for admin system:masters
token_for alice platform:admin
token_for dave platform:developer
token_for rita platform:readonly
token_for nobody ""

"$bin/etcd" "$dir/etcd" "http://127.0.0.1:$etcd_port" >"$dir/etcd.log" 2>&1 &
pids+=($!)
until_ok 300 "http://127.0.0.1:$etcd_port/health" ||
    failed "etcd did not answer on 127.0.0.1:$etcd_port within 30 s (see $dir/etcd.log)"

"$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$dir/certs" --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    --token-auth-file="$dir/tokens.csv" --authorization-mode=RBAC --allow-privileged=true \
    >"$dir/kube-apiserver.log" 2>&1 &
pids+=($!)
admin="$(cat "$dir/tokens/admin")"
until_ok 600 -k -H "Authorization: Bearer $admin" "https://127.0.0.1:$api_port/readyz" ||
    failed "kube-apiserver did not become ready on 127.0.0.1:$api_port within 60 s (see $dir/kube-apiserver.log)"

ca="$(base64 -w0 "$dir/certs/apiserver.crt")"
cat >"$dir/kubeconfig.partial" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test-peer
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $admin
contexts:
- name: test-peer
  context:
    cluster: test-peer
    user: admin
current-context: test-peer
EOF
mv "$dir/kubeconfig.partial" "$dir/kubeconfig"

"$bin/kube-controller-manager" --kubeconfig="$dir/kubeconfig" --leader-elect=false \
    --controllers='*' --service-account-private-key-file="$dir/sa.key" \
    --use-service-account-credentials=false --bind-address=127.0.0.1 --secure-port=0 \
    >"$dir/kube-controller-manager.log" 2>&1 &
pids+=($!)

touch "$dir/ready"

# The watchdog: stop once no leased test process has been alive for $idle_grace s,
# or when a part of the control plane died (the tests then fail with its log).
idle=0
while true; do
    sleep 1
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/ready"
            failed "a control-plane process ($pid) exited; see the logs in $dir"
        fi
    done
    alive=0
    for lease in "$dir"/leases/*; do
        [[ -e "$lease" ]] || continue
        if kill -0 "$(basename "$lease")" 2>/dev/null; then
            alive=1
        else
            rm -f "$lease"
        fi
    done
    if ((alive)); then idle=0; else idle=$((idle + 1)); fi
    if ((idle >= idle_grace)); then
        # Decide under the lock the test processes take to lease the control plane,
        # so none of them starts using it while it stops.
        exec 9>"$dir.lock"
        flock -x 9
        for lease in "$dir"/leases/*; do
            [[ -e "$lease" ]] && kill -0 "$(basename "$lease")" 2>/dev/null && alive=1
        done
        if ((alive)); then
            exec 9>&-
            idle=0
            continue
        fi
        rm -f "$dir/ready"
        stop
        trap - EXIT
        # The data is of no use to anyone now; the logs stay for a post-mortem.
        rm -rf "$dir/etcd"
        exit 0
    fi
done
