#!/usr/bin/env bash
# A local Redis Cluster for trying ROLLCALL_REDIS_CLUSTER: 3 masters and
# 3 replicas from ./redis.conf on 127.0.0.1:7000-7005 (each node's cluster
# bus on its port + 10000), data in ./.redis-cluster/<port>/. Started in the
# background; it survives a stop and start (each node keeps its
# nodes.conf). `scripts/redis_cluster.sh stop` shuts every node down
# (SHUTDOWN fsyncs the AOF). REDIS_CLUSTER_PORT moves the six ports.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${REDIS_CLUSTER_PORT:-7000}
dir=$PWD/.redis-cluster
ports=$(seq "$base" $((base + 5)))

if [ "${1:-start}" = stop ]; then
	for p in $ports; do redis-cli -p "$p" shutdown 2>/dev/null || true; done
	exit 0
fi

for p in $ports; do
	mkdir -p "$dir/$p"
	if ! redis-cli -p "$p" ping >/dev/null 2>&1; then
		redis-server "$PWD/redis.conf" --port "$p" --dir "$dir/$p" \
			--daemonize yes --logfile "$dir/$p/redis.log" \
			--cluster-enabled yes --cluster-config-file nodes.conf \
			--cluster-node-timeout 5000 --cluster-require-full-coverage no
	fi
done
for p in $ports; do
	for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
# A first start: make the cluster (a restart finds it in nodes.conf).
if [ "$(redis-cli -p "$base" cluster info | grep -c 'cluster_known_nodes:6')" = 0 ]; then
	redis-cli --cluster create $(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done) \
		--cluster-replicas 1 --cluster-yes >/dev/null
fi
for _ in $(seq 150); do
	redis-cli -p "$base" cluster info | grep -q 'cluster_state:ok' && break
	sleep 0.2
done
redis-cli -p "$base" cluster info | grep -q 'cluster_state:ok' || {
	echo "the cluster did not become ready; see $dir/*/redis.log" >&2
	exit 1
}
# Every master's replica synced and online: rollcall acknowledges a webhook
# only once a replica has it (WAIT 1), so until then webhooks would get 503.
replicas_online() {
	for p in $ports; do
		info=$(redis-cli -p "$p" info replication)
		if echo "$info" | grep -q 'role:master'; then
			echo "$info" | grep -q '^slave0:.*state=online' || return 1
		fi
	done
}
for _ in $(seq 150); do
	replicas_online && break
	sleep 0.2
done
replicas_online || {
	echo "the replicas did not come online; see $dir/*/redis.log" >&2
	exit 1
}
echo "Redis Cluster up (3 masters + 3 replicas). Seeds for rollcall:"
echo "  ROLLCALL_REDIS_CLUSTER=redis://127.0.0.1:$base,redis://127.0.0.1:$((base + 1)),redis://127.0.0.1:$((base + 2))"
echo "Stop it with: make redis-cluster-stop"
