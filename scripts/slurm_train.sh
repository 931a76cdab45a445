#!/bin/bash
# Multi-host training under SLURM: one process per node, each driving every GPU of its node.
#
#   sbatch scripts/slurm_train.sh                                   # from the repository root
#   sbatch --nodes=4 scripts/slurm_train.sh configs/cifar.py:ve_ncsnpp --config.training.batch_size=256
#
# `srun` starts one task per node; main.py then calls jax.distributed.initialize with no arguments,
# and jax reads the coordinator (the first node), the process count and this process's index from
# srun's SLURM_* variables (distributed.py), so no --coordinator_address is needed. The global batch
# (training.batch_size, a multiple of the number of GPUs) is split over the processes; process 0
# alone writes metrics.jsonl, TensorBoard logs and samples; every process takes part in each
# orbax checkpoint, so WORKDIR (and data.root) must be on a file system that every node sees.
#
# Stopping and resuming. SIGTERM makes training save a checkpoint at the next step and exit 0; across
# processes jax's preemption service agrees on that step, so a signal to any node stops them all at
# the same one. Two ways a job ends early:
#   - pre-emption: SLURM sends SIGTERM, waits its GraceTime, then kills; --requeue puts the job back
#     in the queue, and the requeued job runs this same script, which resumes from the checkpoint;
#   - time limit: --signal=TERM@120 sends SIGTERM to every task about 120 s before the limit (SLURM's
#     timer may fire up to 60 s earlier); the script then sees "received SIGTERM" in the log and
#     requeues itself.
# Re-running the same command by hand resumes the same way: batches and noise are a pure function of
# (seed, step), so a resumed run continues exactly where it stopped. The training output is appended
# to $WORKDIR/slurm.log across restarts.
#SBATCH --job-name=scorejax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-task=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -u

CONFIG=${1:-configs/cifar.py:vp_ddpmpp}
shift $(( $# > 0 ? 1 : 0 ))
file=${CONFIG%%:*}
variant=${CONFIG#"$file"}
NAME=$(basename "$file" .py)${variant:+_${variant#:}}
WORKDIR=${WORKDIR:-${SCRATCH:-$HOME/scratch}/scorejax/$NAME}
mkdir -p "$WORKDIR"
LOG="$WORKDIR/slurm.log"
echo "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NUM_NODES node(s): $CONFIG -> $WORKDIR"

# Pre-emption signals this shell too: keep it alive (a trap, unlike an ignored signal, is not
# inherited) until srun returns, so the tasks can finish their checkpoint.
trap 'echo "batch shell: SIGTERM; waiting for the training processes to checkpoint"' TERM
logged=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
echo "training output: $LOG"
srun --kill-on-bad-exit=1 --output="$LOG" --open-mode=append \
  .venv/bin/python main.py --config="$CONFIG" --workdir="$WORKDIR" "$@"
status=$?

# Stopped by the time-limit signal (this run's output says so): queue the same job again.
if [ "$status" -eq 0 ] && tail -c +$((logged + 1)) "$LOG" | grep -q "^received SIG[A-Z]* at step"; then
  echo "checkpoint saved before the time limit; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
