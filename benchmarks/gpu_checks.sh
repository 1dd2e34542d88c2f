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
# REPLICATE_SEEDS (0,1), MPS (1: start CUDA MPS when its daemon is there and a probe works),
# SMOKE=1: a CPU rehearsal of the same pipeline on small settings (a few methods, 300 rows).
set -u
OUTDIR=${1:?usage: benchmarks/gpu_checks.sh OUT [DEADLINE_S]}
DEADLINE=${2:-450}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MNIST=${MNIST_DIR:-../shared/data/mnist}
FMNIST=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
WORKERS=${BENCH_WORKERS:-5}
RSEEDS=${REPLICATE_SEEDS:-0,1}
SMOKE=${SMOKE:-0}
HERE=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/driver.log"
START=$(date +%s)
say() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - ($(date +%s) - START))); }

say "host $(hostname) python $($PY -c 'import sys; print(sys.version.split()[0])')"
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import torch, numpy, sklearn
print("torch", torch.__version__, "numpy", numpy.__version__, "sklearn", sklearn.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import obliviate
print("obliviate", obliviate.__version__, obliviate.__file__)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"

if [ "$DEVICE" != cpu ] && [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && timeout 60 $PY -c "import torch; torch.zeros(1, device='cuda').add_(1); torch.cuda.synchronize()"; then
        say "MPS on"
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
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

run_job() {  # name, then the command; stops at the deadline
    local name=$1; shift
    ( t=$(left); [ "$t" -gt 5 ] || exit 0
      say "start $name"
      timeout -k 10 "$t" "$@" > "$OUTDIR/$name.log" 2>&1
      say "end $name rc=$?" ) &
}

DC_ARGS=(--device "$DEVICE")
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
while [ "$(jobs -r | wc -l)" -gt 0 ]; do
    sleep 5
    [ $(( ($(date +%s) - START) % 60 )) -lt 5 ] && command -v nvidia-smi >/dev/null \
        && say "gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
done
wait
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control 2>/dev/null
for name in mnist fmnist; do
    f="$OUTDIR/unlearning_${name}_full/results.jsonl"
    [ -f "$f" ] && say "$name runs recorded: $(wc -l < "$f")"
done
say "done"
