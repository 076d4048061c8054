#!/usr/bin/env bash
# Install (Debian slurm-wlm + munge) and start a single-node SLURM cluster on this machine, for the tests.
# Idempotent: if the node already answers as idle, nothing is done. Needs root (apt, daemons).
#
# The node declares CPUS (default 8) CPUs whatever the hardware has (SlurmdParameters=config_overrides), so
# group jobs that ask for the sum of their members' CPUs still start; no GPUs; no accounting database, so
# status queries go through squeue (slurm-status-command: squeue) with a long MinJobAge.
set -euo pipefail

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
for daemon in slurmctld slurmd; do
    if others="$(pgrep -x -d " " "$daemon")"; then
        echo "slurm: a $daemon this script did not start is running (PID $others); not touching it" >&2
        exit 3
    fi
done

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: a key, owned by munge, and the daemon running as munge.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
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
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=86400
KillWait=30
SlurmdParameters=config_overrides
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
