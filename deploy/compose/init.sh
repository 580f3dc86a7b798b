#!/bin/sh
# compose.yaml's one-shot `init` service: forms the cluster once its nodes are up. n1 created it
# alone; n2 and n3 came up with seeds and wait, owning nothing, until an operator stages their
# join and commits it. This does that for every node of JOIN_NODES that is not yet a member of
# the layout, and nothing when all are (so `docker compose up` on an existing cluster is a
# no-op). Environment: YESKV_NODE (a node's client URL), JOIN_NODES (node ids, space separated).
set -eu
: "${YESKV_NODE:?YESKV_NODE: the client URL of a node of the cluster}"
: "${JOIN_NODES:?JOIN_NODES: the node ids to make members}"
# `yeskv cluster status` prints one row per node it knows: id, up/down, state, zone, partitions
# owned. A node known only to the gossip shows as `joining` and owns 0 partitions: that one needs
# its join staged. (A committed member owns its share at once, while it still receives the data.)
# It may take a few seconds for a node's gossip to reach the node asked: wait for every row.
deadline=$(( $(date +%s) + 120 ))
while :; do
  # A failed look (the node busy, a timeout) is retried like a missing node, until the deadline.
  status=$(yeskv cluster status --node "$YESKV_NODE") || status=""
  missing="" to_join=""
  for id in $JOIN_NODES; do
    # `|| true`: the loop's status is its last test's, false when no row matched (set -e).
    row=$(printf '%s\n' "$status" | while read -r member _up state _zone owns _rest; do
      if [ "$member" = "$id" ]; then echo "$state $owns"; break; fi
    done) || true
    case "$row" in
      "") missing="$missing $id" ;;
      "joining 0") to_join="$to_join $id" ;;
      *) ;;
    esac
  done
  [ -z "$missing" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "init: after 120 s, $YESKV_NODE still does not know:$missing" >&2
    exit 1
  fi
  sleep 2
done
if [ -z "$to_join" ]; then
  echo "init: every node of '$JOIN_NODES' is a member already; nothing to do"
  exit 0
fi
echo "init: joining$to_join"
# shellcheck disable=SC2086 # node ids are words
yeskv cluster join --node "$YESKV_NODE" $to_join
yeskv cluster commit --node "$YESKV_NODE"
yeskv cluster status --node "$YESKV_NODE"
