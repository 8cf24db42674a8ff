#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try (and test) `hydra/launcher=slurm` without a
# cluster:
#
#   tools/slurm_local.sh up      # install slurm-wlm and munge if missing, start the daemons,
#                                # wait until sinfo shows the node idle
#   tools/slurm_local.sh down    # stop the daemons that `up` started (by their pid files)
#   tools/slurm_local.sh status  # sinfo
#
# (`make slurm-up`, `make slurm-down`.) Needs root (apt-get, and SlurmUser=root). Everything the
# daemons write (config, state, spool, logs, pid files) lives in $FER_LOTTERY_SLURM_DIR, by
# default /tmp/fer_lottery_slurm; `down` leaves other SLURM daemons on the machine alone.
# The node offers every CPU and 90% of the memory; the partition is `debug` (the default one).
set -euo pipefail

DIR="${FER_LOTTERY_SLURM_DIR:-/tmp/fer_lottery_slurm}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"
PARTITION="${FER_LOTTERY_SLURM_PARTITION:-debug}"

say() { echo "slurm_local: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

munge_key() {
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local cpus mem_mb
    cpus="$(nproc)"
    mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    cat >"$CONF" <<EOF
ClusterName=fer_lottery_local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
MinJobAge=300
# A test cluster: a requeued job may start again 10 s after its requeue (the default is 120 s,
# the credential lifetime), and the scheduler looks at pending jobs every 5 s (default 60 s).
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5,bf_interval=5
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    install_packages
    munge_key
    write_config
    if ! pgrep -x munged >/dev/null; then
        say "starting munged"
        if id munge >/dev/null 2>&1; then
            su -s /bin/sh munge -c "munged --force --pid-file=$DIR/munged.pid" 2>/dev/null \
                || munged --force --pid-file="$DIR/munged.pid"
        else
            munged --force --pid-file="$DIR/munged.pid"
        fi
    fi
    alive "$DIR/slurmctld.pid" || { say "starting slurmctld"; slurmctld -f "$CONF"; }
    alive "$DIR/slurmd.pid" || { say "starting slurmd"; slurmd -f "$CONF"; }
    # sbatch, sinfo and submitit find the config without SLURM_CONF when no other one is there.
    if [ ! -e /etc/slurm/slurm.conf ]; then
        mkdir -p /etc/slurm
        ln -s "$CONF" /etc/slurm/slurm.conf
    fi
    export SLURM_CONF="$CONF"
    for _ in $(seq 60); do
        if sinfo -h -o "%T" 2>/dev/null | grep -qx idle; then
            say "up: partition $PARTITION, node $HOST idle (config: $CONF)"
            sinfo
            return
        fi
        sleep 1
    done
    say "the node did not become idle within 60 s; see $DIR/log/"
    sinfo || true
    exit 1
}

down() {
    for daemon in slurmd slurmctld munged; do
        pid_file="$DIR/$daemon.pid"
        if alive "$pid_file"; then
            say "stopping $daemon ($(cat "$pid_file"))"
            kill "$(cat "$pid_file")"
            for _ in $(seq 30); do alive "$pid_file" || break; sleep 0.5; done
        fi
        rm -f "$pid_file"
    done
    if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) SLURM_CONF="$CONF" sinfo ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
