#!/usr/bin/env bash
# The README's accelerator checks as one script with a deadline, for a GPU machine lent for a
# few minutes: every job starts at once (small models leave a large GPU mostly idle; the CPU
# cores that launch the kernels are the limit), each is stopped at the deadline, and what
# finished is kept (the bench writes one line per finished run).
#
#   benchmarks/gpu_checks.sh OUT [DEADLINE_S]
#
# Jobs (logs and results under OUT/):
#   - benchmarks/device_check.py --device $DEVICE (every strategy, unlearner and the sharded
#     engine against CPU fp32);
#   - obliviate bench of benchmarks/specs/unlearning_{mnist,fmnist}_full.toml ($BENCH_WORKERS
#     workers each; full MNIST / Fashion-MNIST, the CNN, every unlearner, 3 seeds);
#   - benchmarks/replicate_cl.py pmnist, the full EWC, SI and A-GEM protocols, one process per
#     (method, seed) of $REPLICATE_SEEDS.
# Environment: MNIST_DIR, FMNIST_DIR (folders with the IDX .gz files; defaults: the shared MNIST
# and Debian's Fashion-MNIST), PYTHON (python3), DEVICE (cuda), BENCH_WORKERS (5),
# REPLICATE_SEEDS (0,1), MPS (1: start CUDA MPS when its daemon is there and a probe works; its
# pipe and log go to a temporary folder, removed when the script stops the daemon),
# SMOKE=1: a CPU rehearsal of the same pipeline on small settings (a few methods, 300 rows).
#
# Exit status: 0 when no job failed: each finished (rc 0), was stopped at the deadline (rc 124;
# also 137 when it came after the deadline: timeout's KILL 10 s after its TERM) or was skipped
# for want of time; the last two did not finish, and the summary line at the end of driver.log
# names them (call again to go on: the bench resumes). 1 when any job failed (any other rc).
# 2 for a bad argument (one line on stderr, before anything is started or written). 129, 130 or
# 143 when the script is stopped by SIGHUP, SIGINT (Ctrl-C) or SIGTERM: it first stops every job
# (TERM, then KILL after 5 s, to each job's process group, to everything below the script and to
# everything carrying this run's OBLIVIATE_GPU_CHECKS_RUN tag: the bench's worker pool too) and
# the CUDA MPS daemon if it started it.
set -u
USAGE="usage: benchmarks/gpu_checks.sh OUT [DEADLINE_S]"
die() { echo "gpu_checks.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] && [ -n "$1" ] || die "$USAGE (OUT: the folder for logs and results; DEADLINE_S: seconds, default 450)"
case $1 in
    -h | --help) sed -n '2,/^set -u$/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1'; $USAGE (OUT must not start with '-')" ;;
esac
OUTDIR=$1
DEADLINE=${2-450}
# a whole number of seconds above 0 (at most 9 digits; leading zeros are decimal, not octal)
[[ $DEADLINE =~ ^[0-9]{1,9}$ ]] && [ $((10#$DEADLINE)) -gt 0 ] \
    || die "DEADLINE_S must be a whole number of seconds above 0 (such as 450), not '$DEADLINE'"
DEADLINE=$((10#$DEADLINE))
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MNIST=${MNIST_DIR:-../shared/data/mnist}
FMNIST=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
WORKERS=${BENCH_WORKERS:-5}
RSEEDS=${REPLICATE_SEEDS:-0,1}
SMOKE=${SMOKE:-0}
HERE=$(cd "$(dirname "$0")" && pwd)
if ! err=$(mkdir -p -- "$OUTDIR" 2>&1) || ! OUTDIR=$(cd -- "$OUTDIR" 2>/dev/null && pwd) \
        || [ ! -w "$OUTDIR" ]; then
    if [ -e "$OUTDIR" ] && [ ! -d "$OUTDIR" ]; then err="it is a file"
    elif [ -z "$err" ]; then err="not a writable folder"; fi
    die "cannot use OUT '$1' as the output folder (${err//$'\n'/; }): give the path of a new or writable folder, not a file or a path under a file"
fi
LOG="$OUTDIR/driver.log"
START=$(date +%s)
RUN_TAG="$$.$START.$RANDOM"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 OBLIVIATE_GPU_CHECKS_RUN=$RUN_TAG
MYPGID=$(ps -o pgid= -p $$ | tr -d ' ')
say() {  # the log first: a closed stdout (`| head`) must not cost the log or the exit status
    local line
    line="[$(($(date +%s) - START))s] $*"
    echo "$line" >> "$LOG"
    echo "$line" 2>/dev/null || true
}
left() { echo $((DEADLINE - ($(date +%s) - START))); }

MPS_STARTED=0
MPS_DIR=""
stop_mps() {  # only the daemon this script started
    [ "$MPS_STARTED" = 1 ] || return 0
    echo quit | timeout 30 nvidia-cuda-mps-control >/dev/null 2>&1
    MPS_STARTED=0
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    rm -rf -- "$MPS_DIR"
    say "MPS stopped"
}

KNOWN_GROUPS=""
run_processes() {  # "GROUPS" line, then "PIDS" line: every process of this run but this shell
    # (its descendants, every member of their process groups other than the script's own, and
    # every process carrying RUN_TAG in its environment); KNOWN_GROUPS keeps groups whose leader
    # is gone, whose members no longer descend from the script
    local me=$BASHPID tagged=""
    [ -r /proc/self/environ ] && tagged=$(grep -l -s -z -x -F "OBLIVIATE_GPU_CHECKS_RUN=$RUN_TAG" \
        /proc/[0-9]*/environ | cut -d/ -f3 | tr '\n' ' ')
    ps -e -o pid=,ppid=,pgid= | awk -v root=$$ -v me="$me" -v mypg="$MYPGID" \
        -v tagged="$tagged" -v known="$KNOWN_GROUPS" '
        { n++; pid[n] = $1; ppid[n] = $2; pg[n] = $3 }
        END {
            skip[me] = 1; more = 1   # this function and what it runs (ps, awk, grep)
            while (more) { more = 0
                for (i = 1; i <= n; i++) if (!(pid[i] in skip) && (ppid[i] in skip)) { skip[pid[i]] = 1; more = 1 } }
            skip[root] = 1
            run[root] = 1; more = 1
            while (more) { more = 0
                for (i = 1; i <= n; i++) if (!(pid[i] in run) && (ppid[i] in run) && !(pid[i] in skip)) { run[pid[i]] = 1; more = 1 } }
            split(tagged, t, " "); for (k in t) run[t[k]] = 1
            split(known, g, " "); for (k in g) grp[g[k]] = 1
            for (i = 1; i <= n; i++) if ((pid[i] in run) && !(pid[i] in skip) && pg[i] != mypg) grp[pg[i]] = 1
            delete grp[mypg]
            for (i = 1; i <= n; i++) if (pg[i] in grp) run[pid[i]] = 1
            groups = ""; for (k in grp) groups = groups " " k
            pids = ""; for (i = 1; i <= n; i++) if ((pid[i] in run) && !(pid[i] in skip)) pids = pids " " pid[i]
            print "GROUPS" groups; print "PIDS" pids }'
}
stop_all() {  # TERM every process of this run, KILL what is left after 5 s
    local round out groups pids sig
    for round in 1 2 3 4 5 6 7 8 9 10 11; do
        out=$(run_processes)
        groups=$(sed -n 's/^GROUPS//p' <<<"$out")
        pids=$(sed -n 's/^PIDS//p' <<<"$out")
        KNOWN_GROUPS="$KNOWN_GROUPS $groups"
        [ -n "${pids// /}" ] || return 0
        [ "$round" = 11 ] && { say "still running after KILL:$pids"; return 1; }
        sig=TERM; [ "$round" -gt 5 ] && sig=KILL
        # shellcheck disable=SC2086  # one word per pid
        kill -s "$sig" $pids 2>/dev/null
        sleep 1
    done
}
on_signal() {  # name, exit status
    trap '' TERM INT HUP PIPE  # once; a closed stdout (Ctrl-C on `... | tee`) must not end the cleanup
    say "caught SIG$1: stopping every job"
    stop_all
    stop_mps
    say "stopped by SIG$1; exit $2"
    exit "$2"
}
trap '' PIPE  # a closed stdout (`| head`): say() keeps logging; nothing dies of SIGPIPE
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT
trap 'on_signal HUP 129' HUP

say "host $(hostname) python $($PY -c 'import sys; print(sys.version.split()[0])')"
# in the background, here and below, so that a signal is acted on at once
$PY - <<'EOF' >> "$LOG" 2>&1 &
import torch, numpy, sklearn
print("torch", torch.__version__, "numpy", numpy.__version__, "sklearn", sklearn.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import obliviate
print("obliviate", obliviate.__version__, obliviate.__file__)
EOF
wait $!
command -v nvidia-smi >/dev/null \
    && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$LOG"

if [ "$DEVICE" != cpu ] && [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
    # the daemon's pipe and log in a private temporary folder (TMPDIR's; short, for its socket),
    # removed when the daemon is stopped
    MPS_DIR=$(mktemp -d -t obliviate-mps.XXXXXX)
    export CUDA_MPS_PIPE_DIRECTORY=$MPS_DIR/pipe CUDA_MPS_LOG_DIRECTORY=$MPS_DIR/log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    # started without the run's tag: stop_mps stops it with quit, the sweep by tag leaves it alone
    if env -u OBLIVIATE_GPU_CHECKS_RUN nvidia-cuda-mps-control -d; then
        MPS_STARTED=1
        timeout 60 "$PY" -c "import torch; torch.zeros(1, device='cuda').add_(1); torch.cuda.synchronize()" &
        if wait $!; then
            say "MPS on"
        else
            stop_mps
            say "MPS failed; off"
        fi
    else
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        rm -rf -- "$MPS_DIR"
        say "MPS failed; off"
    fi
fi

SPECS="$OUTDIR/specs"
mkdir -p "$SPECS"
for name in mnist fmnist; do
    src="$HERE/specs/unlearning_${name}_full.toml"
    if [ "$SMOKE" = 1 ]; then
        # the same spec, seed block 0 only, 4 methods, 300 rows, on the CPU
        $PY - "$src" "$SPECS/$name.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
head, *blocks = text.split("[[forget]]")
block = blocks[0].replace('device = "cuda"', 'device = "cpu"\nlimit = 300\nn_epochs = 1')
block = re.sub(r"methods = \[[^\]]*\]", 'methods = ["retrain", "ssd", "finetune", "upcore"]', block)
open(sys.argv[2], "w").write(head + "[[forget]]" + block)
EOF
    else
        sed "s/device = \"cuda\"/device = \"$DEVICE\"/" "$src" > "$SPECS/$name.toml"
    fi
done

NAMES=()          # every job, in order
declare -A PID=()    # name -> pid of the job's shell, while it runs
declare -A STATUS=() # name -> ok | deadline | skipped | failed rc=N
run_job() {  # name, then the command; stops at the deadline
    local name=$1 t; shift
    NAMES+=("$name")
    t=$(left)
    if [ "$t" -le 5 ]; then
        say "skip $name: no time left"
        STATUS[$name]=skipped
        return
    fi
    ( say "start $name"
      timeout -k 10 "$t" "$@" > "$OUTDIR/$name.log" 2>&1
      rc=$?
      if [ "$rc" = 137 ] && [ "$(left)" -le 0 ]; then
          say "end $name rc=137 (killed 10 s after the deadline)"
          exit 124
      fi
      say "end $name rc=$rc"
      exit "$rc" ) &
    PID[$name]=$!
}
reap() {  # record the status of every job whose shell has ended
    local name rc
    for name in "${!PID[@]}"; do
        kill -0 "${PID[$name]}" 2>/dev/null && continue
        wait "${PID[$name]}"; rc=$?
        case $rc in
            0) STATUS[$name]=ok ;;
            124) STATUS[$name]=deadline ;;
            *) STATUS[$name]="failed rc=$rc" ;;
        esac
        unset "PID[$name]"
    done
}

DC_ARGS=(--device "$DEVICE")
# shellcheck disable=SC2054  # commas inside one argument
[ "$SMOKE" = 1 ] && DC_ARGS+=(--quick --methods naive,ewc,ssd,retrain)
run_job device_check "$PY" "$HERE/device_check.py" "${DC_ARGS[@]}"
run_job bench_mnist "$PY" -m obliviate.cli.main bench "$SPECS/mnist.toml" \
    --out "$OUTDIR/unlearning_mnist_full" --workers "$WORKERS" --data-dir "$MNIST" --quiet
run_job bench_fmnist "$PY" -m obliviate.cli.main bench "$SPECS/fmnist.toml" \
    --out "$OUTDIR/unlearning_fmnist_full" --workers "$WORKERS" --data-dir "$FMNIST" --quiet
for m in ewc si agem; do
    for s in ${RSEEDS//,/ }; do
        R_ARGS=(pmnist --data-dir "$MNIST" --seeds "$s" --methods "$m" --device "$DEVICE")
        [ "$SMOKE" = 1 ] && R_ARGS+=(--max-epochs 1 --pmnist-tasks 2 --limit 300)
        run_job "replicate_${m}_s$s" "$PY" "$HERE/replicate_cl.py" "${R_ARGS[@]}"
    done
done
LAST_GPU=$(date +%s)
while reap; [ "${#PID[@]}" -gt 0 ]; do
    sleep 1 & wait $!
    if [ $(($(date +%s) - LAST_GPU)) -ge 60 ] && command -v nvidia-smi >/dev/null; then
        LAST_GPU=$(date +%s)
        say "gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
    fi
done
# what a job left behind when its command ended or was stopped at the deadline (timeout signals
# its own process group only, and waits for its command only): stopped like on a signal
out=$(run_processes)
if [ -n "$(sed -n 's/^PIDS *//p' <<<"$out")" ]; then
    say "processes the jobs left running:$(sed -n 's/^PIDS//p' <<<"$out"); stopping them"
    stop_all
fi
stop_mps
for name in mnist fmnist; do
    f="$OUTDIR/unlearning_${name}_full/results.jsonl"
    [ -f "$f" ] && say "$name runs recorded: $(wc -l < "$f")"
done
n_failed=0
summary=""
for name in "${NAMES[@]}"; do
    case ${STATUS[$name]} in
        ok) summary+=", $name ok" ;;
        deadline) summary+=", $name stopped at the deadline (not finished)" ;;
        skipped) summary+=", $name skipped: no time left (not finished)" ;;
        *) summary+=", $name ${STATUS[$name]}"; n_failed=$((n_failed + 1)) ;;
    esac
done
say "jobs: ${summary#, }"
if [ "$n_failed" -gt 0 ]; then
    say "done: $n_failed job(s) failed (their logs: $OUTDIR/NAME.log); exit 1"
    exit 1
fi
say "done"
exit 0
