#!/bin/sh
# The StatefulSet's readiness probe (statefulset.yaml; in the yeskv-config ConfigMap): the node
# serves (/v1/health 200: not starting, catching up or draining) and start.sh has found it
# recorded in the layout at this pod's address, or not a member yet ($READY_FILE; see start.sh,
# "Pod IPs" in deploy/README.md). Not ready takes the pod out of the client Service, and holds a
# rolling update before the next pod.
set -u
: "${POD_IP:?}"
: "${READY_FILE:=/tmp/yeskv-address-ok}"
case "$POD_IP" in
  *:*) url="http://[$POD_IP]:8081/v1/health" ;;
  *) url="http://$POD_IP:8081/v1/health" ;;
esac
[ -f "$READY_FILE" ] || { echo "not ready: this pod's address is not yet the one the layout records (start.sh)"; exit 1; }
exec curl -fsS -o /dev/null --max-time 2 "$url"
