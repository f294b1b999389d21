# Shared functions of the benchmark scripts (source it; do not run it).
#
# Usage of every script:  bash scripts/eval/<bench>.sh [CONFIG.yaml | --config CONFIG.yaml] [driver options...]
#   CONFIG          pruning config (default: the unpruned config of the checkpoint's family, configs/none/llava15.yaml
#                   or, for a Qwen2.5-VL checkpoint, configs/none/qwen2_5_vl.yaml); the run name is
#                   <config folder>_<config name>, e.g. visiondrop_llava15_64 (override: RUN_NAME)
#   driver options  passed to the answer generator, e.g. --set llm.merge=false, --dominant 42 ...,
#                   --batch-size 4, --max-new-tokens 16, --overwrite (discard this run's answers, start afresh)
# Environment:
#   MODEL_PATH      local checkpoint folder: LLaVA-1.5 / NeXT or Qwen2.5-VL (its chat template; docs/qwen.md)
#                   (default checkpoints/llava-v1.5-7b)
#   DATA_ROOT       benchmark data (default playground/data/eval; layout in playground/data/README.md)
#   RESULTS_ROOT    result JSONs go to $RESULTS_ROOT/<run>/<bench>.json (default results)
#   DEVICE          cuda or cpu (default: cuda when GPUs are visible, else cpu)
#   GPUS or CUDA_VISIBLE_DEVICES   e.g. 0,1,2,3: one generation process (chunk) per GPU
#   CHUNKS          on CPU only: number of parallel generation processes (default 1)
#   PYTHON          interpreter (default .venv/bin/python of the repo when present, else python3)
# Relative paths given by the user are taken from the current folder; defaults from the repository root.
# Rerunning a script resumes: answers already written are reused, only missing ones are generated; a rerun whose
# model, config, generation settings or code version differ is refused unless --overwrite is given.
# Ctrl-C / SIGTERM stops every generation process the script started and prints the command that resumes.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "error: $*" >&2; exit 1; }

# generation_failed STATUS: stop with advice for a driver's exit status; 2 = it refused its input (a bad
# checkpoint, config or question file), which rerunning does not fix; anything else may have been cut short.
generation_failed() {
    [[ $1 -ne 2 ]] || die "answer generation refused its input (see above); fix that, then rerun"
    die "answer generation failed (see above); fix the cause and rerun to resume: ${RESUME_CMD:-the same command}"
}

CHILD_PIDS=()
# on_signal NAME CODE: stop the generation processes this script started, say how to resume, exit CODE.
on_signal() {
    trap - INT TERM
    if [[ ${#CHILD_PIDS[@]} -gt 0 ]]; then
        kill -TERM "${CHILD_PIDS[@]}" 2>/dev/null || true
        wait "${CHILD_PIDS[@]}" 2>/dev/null || true
    fi
    echo "interrupted ($1): stopped the answer generators; the answers written so far are kept." >&2
    echo "  resume with the same environment and: ${RESUME_CMD:-the same command}" >&2
    exit "$2"
}
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM

# abs_path PATH BASE: PATH made absolute against BASE (unchanged when already absolute).
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$2/$1" ;; esac; }

# require_path PATH WHAT: stop at once, saying what to put where, when PATH does not exist.
require_path() {
    [[ -e "$1" ]] && return 0
    {
        echo "error: missing $1"
        echo "  put there: $2"
        echo "  (DATA_ROOT=$DATA_ROOT; the expected layout is in playground/data/README.md)"
    } >&2
    exit 1
}

# eval_setup "$@": read the config argument and the environment; sets CONFIG RUN CKPT GEN_ARGS PY DEVICE
# CHUNKS GPU_LIST MODEL_PATH DATA_ROOT RESULTS_DIR.
eval_setup() {
    local caller=$PWD k given="" arg resume=()
    CONFIG=""
    if [[ $# -gt 0 && "$1" != -* ]]; then CONFIG=$1; given=$1; shift; fi
    GEN_ARGS=()
    while [[ $# -gt 0 ]]; do  # --config is the config argument too (it decides the run name)
        case "$1" in
            --config|--config=*)
                if [[ "$1" == --config ]]; then arg=${2:-}; shift $(($# > 1 ? 2 : 1)); else arg=${1#--config=}; shift; fi
                [[ -n "$arg" ]] || die "--config needs a file, e.g. --config configs/visiondrop/llava15_64.yaml"
                [[ -z "$given" || "$given" == "$arg" ]] || die "two configs given ($given and $arg); give one"
                CONFIG=$arg; given=$arg ;;
            *) GEN_ARGS+=("$1"); shift ;;
        esac
    done
    for arg in "$0" ${given:+"$given"} "${GEN_ARGS[@]}"; do [[ "$arg" == --overwrite ]] || resume+=("$arg"); done
    RESUME_CMD="bash$(printf ' %q' "${resume[@]}")"
    if [[ -n "${MODEL_PATH:-}" ]]; then MODEL_PATH=$(abs_path "$MODEL_PATH" "$caller")
    else MODEL_PATH=$REPO_ROOT/checkpoints/llava-v1.5-7b; fi
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON=$REPO_ROOT/.venv/bin/python; else PYTHON=python3; fi
    fi
    PY=$PYTHON
    if [[ -n "${DATA_ROOT:-}" ]]; then DATA_ROOT=$(abs_path "$DATA_ROOT" "$caller")
    else DATA_ROOT=$REPO_ROOT/playground/data/eval; fi
    require_path "$MODEL_PATH/config.json" "a checkpoint (e.g. liuhaotian/llava-v1.5-7b or Qwen/Qwen2.5-VL-7B-Instruct) in $MODEL_PATH, or set MODEL_PATH"
    if [[ -z "$CONFIG" ]]; then  # the unpruned config of the checkpoint's family
        CONFIG=$("$PY" -m llava.model.family "$MODEL_PATH") || die "cannot read $MODEL_PATH/config.json"
    fi
    if [[ -f "$(abs_path "$CONFIG" "$caller")" ]]; then
        CONFIG=$(abs_path "$CONFIG" "$caller")
    else
        CONFIG=$(abs_path "$CONFIG" "$REPO_ROOT")
    fi
    [[ -f "$CONFIG" ]] || die "config file $CONFIG not found (configs live in configs/<method>/<model>_<budget>.yaml)"
    local stem folder
    stem=$(basename "$CONFIG"); stem=${stem%.yaml}; stem=${stem%.yml}
    folder=$(basename "$(dirname "$CONFIG")")
    RUN=${RUN_NAME:-${folder}_${stem}}
    CKPT=$RUN
    if [[ -n "${RESULTS_ROOT:-}" ]]; then RESULTS_DIR=$(abs_path "$RESULTS_ROOT" "$caller")/$RUN
    else RESULTS_DIR=$REPO_ROOT/results/$RUN; fi
    local gpus=${GPUS:-${CUDA_VISIBLE_DEVICES:-}}
    if [[ -z "$gpus" && "${DEVICE:-}" != cpu ]] && command -v nvidia-smi >/dev/null 2>&1; then
        gpus=$(nvidia-smi -L 2>/dev/null | awk '/^GPU/{printf "%s%d", sep, n++; sep=","}') || gpus=""
    fi
    DEVICE=${DEVICE:-$([[ -n "$gpus" ]] && echo cuda || echo cpu)}
    if [[ "$DEVICE" == cpu || -z "$gpus" ]]; then
        GPU_LIST=()
        for ((k = 0; k < ${CHUNKS:-1}; k++)); do GPU_LIST+=(""); done
    else
        IFS=, read -r -a GPU_LIST <<< "$gpus"
    fi
    CHUNKS=${#GPU_LIST[@]}
    SECONDS=0
    echo "run $RUN: config $CONFIG, model $MODEL_PATH, device $DEVICE, chunks $CHUNKS" >&2
}

# generate MODULE FINAL_FILE CHUNK_DIR QUESTION_FILE [driver args...]
# Writes the answers of QUESTION_FILE into FINAL_FILE. With CHUNK_DIR (or more than one GPU) every GPU k
# writes CHUNK_DIR/{CHUNKS}_{k}.jsonl and the chunks are merged into FINAL_FILE (checked against the questions).
generate() {
    local module=$1 final=$2 chunk_dir=$3 questions=$4
    shift 4
    local common=(--question-file "$questions" --model-path "$MODEL_PATH" --config "$CONFIG"
                  --conv-mode vicuna_v1 --temperature 0 --device "$DEVICE")
    local k fail=0
    if [[ -z "$chunk_dir" && $CHUNKS -eq 1 ]]; then
        mkdir -p "$(dirname "$final")"
        # in the background, so that a signal reaches the trap at once (the trap stops it)
        "$PY" -m "$module" "${common[@]}" "$@" --answers-file "$final" "${GEN_ARGS[@]}" &
        CHILD_PIDS=($!)
        wait "${CHILD_PIDS[0]}" || fail=$?
        CHILD_PIDS=()
        [[ $fail -eq 0 ]] || generation_failed "$fail"
        return 0
    fi
    [[ -n "$chunk_dir" ]] || chunk_dir=${final%.jsonl}
    mkdir -p "$chunk_dir"
    for ((k = 0; k < CHUNKS; k++)); do
        local gpu=${GPU_LIST[$k]}
        if [[ -n "$gpu" ]]; then
            CUDA_VISIBLE_DEVICES=$gpu "$PY" -m "$module" "${common[@]}" "$@" --answers-file "$chunk_dir/${CHUNKS}_$k.jsonl" \
                --num-chunks "$CHUNKS" --chunk-idx "$k" "${GEN_ARGS[@]}" &
        else
            "$PY" -m "$module" "${common[@]}" "$@" --answers-file "$chunk_dir/${CHUNKS}_$k.jsonl" \
                --num-chunks "$CHUNKS" --chunk-idx "$k" "${GEN_ARGS[@]}" &
        fi
        CHILD_PIDS+=($!)
    done
    for pid in "${CHILD_PIDS[@]}"; do  # a chunk cut short (status other than 2) outranks one that refused its input
        wait "$pid" || { local status=$?; [[ $fail -ne 0 && $fail -ne 2 ]] || fail=$status; }
    done
    CHILD_PIDS=()
    [[ $fail -eq 0 ]] || generation_failed "$fail"
    "$PY" -m llava.eval.merge_chunks --chunk-dir "$chunk_dir" --num-chunks "$CHUNKS" --question-file "$questions" \
        --output "$final" || die "merging the chunk answer files failed (see above)"
}

# record_extra ANSWERS: JSON with model, method, full config, measured visual tokens and wall time.
record_extra() {
    "$PY" -m llava.eval.record extra --answers "$1" --run "$RUN" --wall-time "$SECONDS"
}

# result_file BENCH: where the result JSON of this run goes.
result_file() {
    mkdir -p "$RESULTS_DIR"
    echo "$RESULTS_DIR/$1.json"
}

# record_pending BENCH ANSWERS UPLOAD: result JSON for a server-scored benchmark (answers, no score yet).
record_pending() {
    "$PY" -m llava.eval.record pending --answers "$2" --benchmark "$1" --output-json "$(result_file "$1")" \
        --upload-file "$3" --run "$RUN" --wall-time "$SECONDS"
}
