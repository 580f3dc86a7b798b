#!/bin/sh
# The StatefulSet's preStop hook (statefulset.yaml; in the yeskv-config ConfigMap). It runs before
# every stop of a pod (scale-down, rolling update, eviction, node drain) and cannot tell which
# one it is, so it never starts a leave itself: handing a node's partitions to the others on
# every restart would move its whole share of the data for nothing. What it does: if the operator
# has committed a leave of this node (`yeskv cluster leave yeskv-2 && yeskv cluster commit`, the
# scale-down procedure in deploy/README.md) and the node is still `leaving` - its partitions not
# yet confirmed on their new holders - it waits until the node is out of the layout, so that a
# scale-down issued too early does not take the last copy of anything away. It gives up when the
# pod's terminationGracePeriodSeconds runs out (the kubelet then stops the container). Any other
# node returns at once, and the server's own SIGTERM drain follows.
#
# It asks the other pods, not this one: a node that has left the layout stops receiving it, so
# its own /v1/status keeps showing it `leaving` (seen on a loopback trial), while the others
# show it as a node known only to the gossip (`joining`, owning nothing) once it is out.
set -u
: "${POD_NAME:?}" "${POD_NAMESPACE:?}" "${PEER_SERVICE:?}"
: "${SEED_ORDINALS:=3}"
: "${CLUSTER_DOMAIN:=cluster.local}"
# The hook's output is not in the container log: it goes to the server's (PID 1) stdout.
: "${PRESTOP_LOG:=/proc/1/fd/1}"
ordinal=${POD_NAME##*-}
set_name=${POD_NAME%-*}
: "${PEER_NODES:=}"
if [ -z "$PEER_NODES" ]; then
  i=0
  while [ "$i" -lt "$SEED_ORDINALS" ]; do
    [ "$i" -ne "$ordinal" ] && PEER_NODES="$PEER_NODES http://$set_name-$i.$PEER_SERVICE.$POD_NAMESPACE.svc.$CLUSTER_DOMAIN:8081"
    i=$((i + 1))
  done
fi

# This node's state in the view of the first other node that answers; empty if none answers.
state_seen_by_others() {
  for node in $PEER_NODES; do
    if status=$(yeskv cluster status --node "$node" 2>/dev/null); then
      # One row per member: id, up/down, state (joining, valid, leaving), ...
      printf '%s\n' "$status" | while read -r member _up state _rest; do
        if [ "$member" = "$POD_NAME" ]; then echo "$state"; break; fi
      done
      return 0
    fi
  done
}

while :; do
  state=$(state_seen_by_others)
  [ "$state" = "leaving" ] || exit 0
  echo "preStop: $POD_NAME is leaving the layout; waiting until its partitions are confirmed on their new holders" >>"$PRESTOP_LOG" 2>/dev/null || true
  sleep 5
done
