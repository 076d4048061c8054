#!/usr/bin/env bash
# Install (Debian slurm-wlm + munge) and start a single-node SLURM cluster on this machine, for the tests.
# Idempotent: if the node already answers as idle, nothing is done. Needs root (apt, daemons).
#
#   start_cluster.sh              the one-node cluster (this machine's host name, /etc/slurm/slurm.conf)
#   start_cluster.sh --nodes 2    a two-node cluster beside it, each node in its own network namespace:
#                                 tests/slurm/two_nodes.sh up (its teardown: two_nodes.sh down)
#
# The node declares CPUS (default 8) CPUs whatever the hardware has (SlurmdParameters=config_overrides), so
# group jobs that ask for the sum of their members' CPUs still start; no GPUs; no accounting database, so
# status queries go through squeue (slurm-status-command: squeue) with a long MinJobAge.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${1:-}" in
    "") ;;
    --nodes)
        case "${2:-}" in
            1) ;;
            2) exec bash "$HERE/two_nodes.sh" up ;;
            *) echo "slurm: --nodes takes 1 or 2, got '${2:-}'" >&2; exit 2 ;;
        esac ;;
    *) echo "usage: start_cluster.sh [--nodes 1|2]" >&2; exit 2 ;;
esac
unset SLURM_CONF  # this cluster is the one of /etc/slurm/slurm.conf
# shellcheck source=tests/slurm/common.sh
. "$HERE/common.sh"

CPUS="${CPUS:-8}"
HOST="$(hostname -s)"
CONF_DIR=/etc/slurm
SPOOL=/var/spool/slurm
LOG_DIR=/var/log/slurm
OURS="${VECSET_SLURM_PIDS:-/run/vecset-test-slurm}"  # the PID files of the daemons this script starts

node_idle() { sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

if command -v sinfo >/dev/null && node_idle; then
    echo "slurm: node $HOST already up"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm: needs root to install and start slurmctld/slurmd" >&2
    exit 3
fi

# A changed node definition needs a controller restart, not just reconfigure. Only daemons this script started
# are stopped, by the PIDs it recorded: on a shared machine another slurmctld or slurmd is someone else's, and
# then nothing here (its config included) is touched.
stop_ours() {  # $1: daemon name; its PID file is ours only if the process it names is that daemon
    local pidfile="$OURS/$1.pid" pid
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        kill "$pid"
        for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}
stop_ours slurmctld
stop_ours slurmd
TWO_NODE_PIDS=/run/vecset-slurm2  # two_nodes.sh's daemons (its controller's PID file, its nodes' namespaces)
not_two_node() {  # the PIDs given that are not the two-node cluster's
    local pid
    for pid in "$@"; do
        [ "$(cat "$TWO_NODE_PIDS/slurmctld.pid" 2>/dev/null)" = "$pid" ] && continue
        [[ "$(ip netns identify "$pid" 2>/dev/null)" == vecset-vn* ]] && continue
        echo -n "$pid "
    done
}
for daemon in slurmctld slurmd; do
    # shellcheck disable=SC2046
    if others="$(not_two_node $(pgrep -x "$daemon"))" && [ -n "$others" ]; then
        echo "slurm: a $daemon this script did not start is running (PID $others); not touching it" >&2
        exit 3
    fi
done

install_slurm
start_munge

MEM_MB=$(node_memory_mb)
mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$SPOOL/d" "$LOG_DIR" "$OURS"
cat > "$CONF_DIR/slurm.conf" <<EOF
ClusterName=vecset-test
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPidFile=$OURS/slurmctld.pid
SlurmdPidFile=$OURS/slurmd.pid
SelectTypeParameters=CR_CPU_Memory
$(shared_slurm_conf)
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld
slurmd
for _ in $(seq 60); do
    if node_idle; then
        echo "slurm: node $HOST up ($CPUS CPUs, $MEM_MB MB)"
        exit 0
    fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm: node $HOST did not come up; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log" >&2
exit 1
