#!/usr/bin/env bash
# A two-node SLURM cluster on this machine, for the multi-node tests. Needs root.
#
#   two_nodes.sh up             start it (idempotent: both nodes answering → nothing done)
#   two_nodes.sh down           stop every daemon and remove every namespace, link and file this script made
#   two_nodes.sh kill-node vn2  lose a node: every process of vn2 (slurmd, job steps, ranks) killed at once
#   two_nodes.sh start-node vn2 start that node's slurmd again (it returns to service, ReturnToService=2)
#
# slurmctld runs in this machine's network namespace, on a private bridge (10.231.0.1/24) that this script
# creates. Each node (vn1, vn2) is a slurmd in its own network and UTS namespace: its own host name, its own
# address (10.231.0.11, .12) on the bridge through a veth pair, its own /etc/hosts (/etc/netns/<ns>/hosts, bind-mounted
# in its own mount namespace) naming every node, so a job step on one node reaches the other by name.
# The file system is shared, as on a cluster; so is munge (its socket is a file). The cluster has its own
# config (SLURM_CONF=/run/vecset-slurm2/etc/slurm.conf: clients here need it in their environment), ports, spool, logs
# and PID files, so it runs beside the one-node cluster of start_cluster.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/slurm/common.sh
. "$HERE/common.sh"

CPUS="${CPUS:-4}"          # per node
ROOT=/run/vecset-slurm2    # config (etc/: the nodes' /etc/slurm) and the PID files
SPOOL=/var/spool/vecset-slurm2
LOGS=/var/log/vecset-slurm2
BRIDGE=vecsetbr0
NET=10.231.0
NODES=(vn1 vn2)
export SLURM_CONF="$ROOT/etc/slurm.conf"

namespace() { echo "vecset-$1"; }  # a node's network namespace
address() {  # a node's address on the bridge
    local i
    for i in "${!NODES[@]}"; do [ "${NODES[$i]}" = "$1" ] && { echo "$NET.$((11 + i))"; return; }; done
    echo "two_nodes.sh: no node '$1' (nodes: ${NODES[*]})" >&2
    exit 2
}

nodes_idle() {  # every node answers (idle, mixed or allocated)
    [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE ' (idle|mix|alloc)$')" = "${#NODES[@]}" ]
}

kill_node() {  # every process in the node's namespace, at once (a node that dies does not shut down cleanly)
    local ns pids
    ns="$(namespace "$1")"
    ip netns list | grep -qw "$ns" || return 0
    pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && return 0; sleep 0.1; done
}

start_node() {  # the node's slurmd, in its namespaces, under its own host name (none when one runs there)
    local ns pid
    ns="$(namespace "$1")"
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmd ] && return 0
    done
    # nsenter, not `ip netns exec`: that remounts /sys, which hides the cgroup mounts slurmd reads. A private
    # mount namespace puts the node's own /etc/hosts over the shared one, and this cluster's config over
    # /etc/slurm: the job step plugin drops SLURM_CONF from a job's environment, so a nested srun reads the
    # default path.
    nsenter --net="/run/netns/$ns" unshare --mount --uts sh -c "mount --bind /etc/netns/$ns/hosts /etc/hosts \
        && mount --bind $ROOT/etc /etc/slurm && hostname $1 && exec slurmd -f $SLURM_CONF -N $1"
}

down() {
    local node ns pid
    for node in "${NODES[@]}"; do
        kill_node "$node"
        ns="$(namespace "$node")"
        # The veth pair first (its peer goes with it); a namespace's deletion also takes its end, asynchronously.
        ip link delete "vecset-h${node#vn}" 2>/dev/null || true
        ip netns list | grep -qw "$ns" && ip netns delete "$ns"
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true  # only when no other namespace has files there
    if [ -s "$ROOT/slurmctld.pid" ]; then
        pid="$(cat "$ROOT/slurmctld.pid")"
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmctld ]; then
            kill "$pid"
            for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            [ -d "/proc/$pid" ] && kill -9 "$pid"
        fi
    fi
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    rm -rf "$ROOT" "$SPOOL" "$LOGS"
    echo "slurm: two-node cluster down"
}

write_config() {
    local host mem node
    host="$(hostname -s)"
    mem="$(node_memory_mb)"
    cat > "$SLURM_CONF" <<EOF
ClusterName=vecset-two
SlurmctldHost=$host($NET.1)
SlurmctldPort=6917
SlurmdPort=6918
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/%n
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd-%n.pid
SelectTypeParameters=CR_CPU_Memory,CR_LLN
SlurmdTimeout=20
$(shared_slurm_conf)
EOF
    for node in "${NODES[@]}"; do
        echo "NodeName=$node NodeAddr=$(address "$node") CPUs=$CPUS RealMemory=$mem State=UNKNOWN" >> "$SLURM_CONF"
    done
    echo "PartitionName=two Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP" >> "$SLURM_CONF"
}

network() {  # the bridge, and each node's namespace, veth pair, address and /etc/hosts
    local node ns host_side hosts
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    hosts="127.0.0.1 localhost"$'\n'"$NET.1 $(hostname -s)"
    for node in "${NODES[@]}"; do hosts+=$'\n'"$(address "$node") $node"; done
    for node in "${NODES[@]}"; do
        ns="$(namespace "$node")"
        host_side="vecset-h${node#vn}"
        ip netns add "$ns"
        ip link add "$host_side" type veth peer name eth0 netns "$ns"
        ip link set "$host_side" master "$BRIDGE"
        ip link set "$host_side" up
        ip netns exec "$ns" ip addr add "$(address "$node")/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
        ip netns exec "$ns" ip link set lo up
        mkdir -p "/etc/netns/$ns"
        echo "$hosts" > "/etc/netns/$ns/hosts"
    done
}

up() {
    if [ -s "$SLURM_CONF" ] && nodes_idle; then
        echo "slurm: two-node cluster already up (SLURM_CONF=$SLURM_CONF)"
        return 0
    fi
    down >/dev/null  # what a crashed run left behind
    install_slurm
    start_munge
    mkdir -p "$ROOT/etc" "$SPOOL/ctld" "$LOGS"
    for node in "${NODES[@]}"; do mkdir -p "$SPOOL/$node"; done
    write_config
    network
    slurmctld -f "$SLURM_CONF"
    for node in "${NODES[@]}"; do start_node "$node"; done
    for _ in $(seq 60); do
        if nodes_idle; then
            echo "slurm: two-node cluster up: ${NODES[*]} ($CPUS CPUs each; SLURM_CONF=$SLURM_CONF)"
            return 0
        fi
        sleep 1
    done
    echo "slurm: the two-node cluster did not come up; see $LOGS/" >&2
    sinfo -N >&2 || true
    return 1
}

if [ "$(id -u)" != 0 ]; then
    echo "slurm: the two-node cluster needs root (namespaces, a bridge, daemons)" >&2
    exit 3
fi
case "${1:-}" in
    up) up ;;
    down) down ;;
    kill-node) address "${2:?node}" >/dev/null && kill_node "$2" && echo "slurm: node $2 killed" ;;
    start-node) address "${2:?node}" >/dev/null && start_node "$2" && echo "slurm: node $2 started" ;;
    *) echo "usage: two_nodes.sh up|down|kill-node NODE|start-node NODE" >&2; exit 2 ;;
esac
