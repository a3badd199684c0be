#!/bin/sh
# Create a Redis Cluster for redsession from nodes that are already running with
# `cluster-enabled yes` (see redis.conf: uncomment the cluster settings at its end).
#
#   deploy/cluster-bootstrap.sh [-r REPLICAS] [-a PASSWORD] host1:7000 host2:7000 ... host6:7000
#
# Needs at least 3 primaries: with -r 1 (the default), 6 nodes. It refuses to touch a node
# that already knows other nodes or holds keys, so running it twice cannot split a cluster.
# Then point redsession at it: REDSESSION_REDIS_URL=redis+cluster://host1:7000,host2:7000
set -eu

replicas=1
password=""
usage() {
    echo "usage: $0 [-r REPLICAS] [-a PASSWORD] host:port host:port ..." >&2
    exit 2
}
while getopts "r:a:h" opt; do
    case "$opt" in
        r) replicas="$OPTARG" ;;
        a) password="$OPTARG" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -ge 3 ] || usage
case "$replicas" in ''|*[!0-9]*) echo "REPLICAS must be a number" >&2; exit 2 ;; esac
need=$((3 * (replicas + 1)))
if [ "$#" -lt "$need" ]; then
    echo "need at least $need nodes for 3 primaries with $replicas replica(s) each" >&2
    exit 2
fi
command -v redis-cli >/dev/null || { echo "redis-cli is not on PATH" >&2; exit 1; }

# The password goes through the environment, not argv (other users can read argv).
if [ -n "$password" ]; then
    export REDISCLI_AUTH="$password"
fi

for node in "$@"; do
    host=${node%:*}
    port=${node##*:}
    if ! redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
        echo "$node does not answer PING" >&2
        exit 1
    fi
    known=$(redis-cli -h "$host" -p "$port" cluster info | tr -d '\r' |
        sed -n 's/^cluster_known_nodes://p')
    keys=$(redis-cli -h "$host" -p "$port" dbsize | tr -d '\r')
    if [ "$known" != "1" ] || [ "$keys" != "0" ]; then
        echo "$node is already part of a cluster or holds keys: not touching it" >&2
        exit 1
    fi
done

redis-cli --cluster create "$@" --cluster-replicas "$replicas" --cluster-yes
redis-cli --cluster check "$1"

# The nodes agree on the slots; wait (up to 30 s) until every one says the cluster is ok.
for node in "$@"; do
    tries=0
    until redis-cli -h "${node%:*}" -p "${node##*:}" cluster info | grep -q '^cluster_state:ok'; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "$node does not report cluster_state:ok after 30 s" >&2
            exit 1
        fi
        sleep 0.5
    done
done
echo "cluster ready: REDSESSION_REDIS_URL=redis+cluster://$(echo "$*" | tr ' ' ',')"
