# shellcheck shell=bash
# Shared by start_cluster.sh and two_nodes.sh (sourced): installing slurm-wlm and munge, and one munge daemon.

# Debian's slurm-wlm and munge, when either is missing.
install_slurm() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    fi
}

# munge: a key, owned by munge, and the daemon running as munge. Every node of a test cluster uses this one
# daemon: its socket is a file, which network namespaces share.
start_munge() {
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
}

# The memory a test node declares: all of this machine's but 1 GB (every node of a cluster declares it; SLURM
# does not check it with SlurmdParameters=config_overrides).
node_memory_mb() {
    echo $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
}

# The slurm.conf lines every test cluster shares: no cgroups, no accounting database (status by squeue, with a
# long MinJobAge), nodes back in service when their slurmd registers, node CPUs as declared (config_overrides).
shared_slurm_conf() {
    cat <<EOF
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=86400
KillWait=30
SlurmdParameters=config_overrides
EOF
}
