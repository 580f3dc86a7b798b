#!/bin/sh
# The StatefulSet's container command (statefulset.yaml; kustomize puts this file in the
# yeskv-config ConfigMap). `yeskv server` takes no per-node values from the environment and its
# config file cannot read them, so this turns the pod's identity into flags and execs the server:
#   --node-id  the pod name (yeskv-0, yeskv-1, ...): stable across restarts, like the data volume;
#   --http, --peer  the pod IP: the server needs IP:PORT literals (no names) and binds and
#              advertises the same address, so neither 0.0.0.0 nor a DNS name will do;
#   --zone     the node's topology.kubernetes.io/zone label when the pod carries it (NODE_ZONE),
#              else the pod name: every node its own failure domain;
#   --seed     the peer address of every other pod among the first SEED_ORDINALS that the
#              headless service resolves right now (publishNotReadyAddresses: starting pods too).
# Who creates the cluster: only yeskv-0, only when it has no data yet and finds no other pod. Any
# other pod that finds no seed and has no data refuses to start (it would create a second
# cluster); the kubelet restarts it until yeskv-0 answers.
set -eu
: "${POD_NAME:?POD_NAME (downward API metadata.name) is required}"
: "${POD_IP:?POD_IP (downward API status.podIP) is required}"
: "${POD_NAMESPACE:?POD_NAMESPACE (downward API metadata.namespace) is required}"
: "${PEER_SERVICE:?PEER_SERVICE (the headless service name) is required}"
: "${SEED_ORDINALS:=3}"
: "${CLUSTER_DOMAIN:=cluster.local}"
: "${CONFIG:=/etc/yeskv/yeskv.toml}"
: "${DATA_DIR:=/var/lib/yeskv/data}"
: "${READY_FILE:=/tmp/yeskv-address-ok}"
http_port=8081
peer_port=7081

ordinal=${POD_NAME##*-}
set_name=${POD_NAME%-*}
case "$ordinal" in
  ''|*[!0-9]*) echo "start: pod name $POD_NAME does not end in -ORDINAL (not a StatefulSet pod?)" >&2; exit 1 ;;
esac

# IP:PORT, with an IPv6 address in brackets.
host_port() {
  case "$1" in
    *:*) echo "[$1]:$2" ;;
    *) echo "$1:$2" ;;
  esac
}

seeds=""
i=0
while [ "$i" -lt "$SEED_ORDINALS" ]; do
  if [ "$i" -ne "$ordinal" ]; then
    name="$set_name-$i.$PEER_SERVICE.$POD_NAMESPACE.svc.$CLUSTER_DOMAIN"
    if entry=$(getent hosts "$name"); then
      ip=${entry%%[[:space:]]*}
      seeds="$seeds --seed $(host_port "$ip" "$peer_port")"
    fi
  fi
  i=$((i + 1))
done

has_data=false
if [ -d "$DATA_DIR" ] && [ -n "$(ls -A "$DATA_DIR")" ]; then
  has_data=true
fi
if [ -z "$seeds" ] && [ "$has_data" = false ] && [ "$ordinal" -ne 0 ]; then
  echo "start: $POD_NAME has no data and no other pod of $PEER_SERVICE resolves yet; not creating a second cluster (retrying on restart)" >&2
  exit 1
fi
if [ -z "$seeds" ] && [ "$has_data" = false ]; then
  echo "start: $POD_NAME creates a new cluster (no data, no other pod found)" >&2
fi

# The layout records every member at the addresses it was joined with, and the other nodes call
# it there; a pod that restarts usually comes back on a new pod IP. So, in the background (its
# output goes to the container log), once this node serves: if the layout records it - a member
# that is `valid`, or `joining` and already owning partitions - at another address, stage its
# join again through another pod (a join of a member updates its recorded addresses) and commit,
# but only when that join is all that is staged and moves no replica; otherwise the join stays
# staged and the log says so, for an operator to commit with their own changes (deploy/README.md,
# "Pod IPs"). When the address is right (or the node is not a member yet, or is leaving) it
# creates $READY_FILE, which ready.sh (the readiness probe) requires: a rolling update does not
# restart the next pod before this one is reachable again.
rm -f "$READY_FILE"
refresh_address() {
  set +e  # runs in its own subshell: a failed look is retried, never the end of the loop
  me=$(host_port "$POD_IP" "$http_port")
  while :; do
    sleep 5
    curl -fsS -o /dev/null --max-time 2 "http://$me/v1/health" 2>/dev/null || continue
    # This node's row of its own status: state, partitions owned, recorded client address (the
    # last column).
    row=$(yeskv cluster status --node "http://$me" 2>/dev/null | while read -r member _up state _zone owns rest; do
      [ "$member" = "$POD_NAME" ] && { echo "$state $owns ${rest##* }"; break; }
    done)
    # shellcheck disable=SC2086 # three words
    set -- $row
    [ $# -eq 3 ] || continue
    case "$1 $2" in
      "joining 0") touch "$READY_FILE"; return 0 ;;  # not a member yet: a join records its address
      leaving\ *) touch "$READY_FILE"; return 0 ;;
    esac
    if [ "$3" = "$me" ]; then
      touch "$READY_FILE"
      return 0
    fi
    i=0
    while [ "$i" -lt "$SEED_ORDINALS" ]; do
      other="$set_name-$i"
      i=$((i + 1))
      [ "$other" = "$POD_NAME" ] && continue
      node="http://$other.$PEER_SERVICE.$POD_NAMESPACE.svc.$CLUSTER_DOMAIN:$http_port"
      plan=$(yeskv cluster join --node "$node" "$POD_NAME" 2>&1) || continue
      if printf '%s\n' "$plan" | grep -qE "^staged \(revision [0-9]+\): join \[\"$POD_NAME\"\], leave \[\]\$" \
        && ! printf '%s\n' "$plan" | grep -q '^staged replicas per region' \
        && printf '%s\n' "$plan" | grep -q '^plan: .*, 0 replicas move$' \
        && yeskv cluster commit --node "$node" >/dev/null 2>&1; then
        echo "start: $POD_NAME was recorded at $3; committed its new address $me"
      else
        echo "start: $POD_NAME is recorded at $3, not $me; its join is staged, but other changes are too or the commit failed: an operator must commit (deploy/README.md, \"Pod IPs\"); retrying in 30 s" >&2
        sleep 25
      fi
      break
    done
  done
}

zone=${NODE_ZONE:-$POD_NAME}
refresh_address &
# shellcheck disable=SC2086 # $seeds is a list of flags
exec yeskv server --config "$CONFIG" --data-dir "$DATA_DIR" --node-id "$POD_NAME" \
  --http "$(host_port "$POD_IP" "$http_port")" --peer "$(host_port "$POD_IP" "$peer_port")" \
  --zone "$zone" $seeds
