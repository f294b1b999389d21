# Shared steps of the video QA scripts (msvd.sh, msrvtt.sh, tgif.sh; source it after common.sh).
# video_qa BENCH VIDEO_FOLDER: answers of $DATA_ROOT/<bench>/test_{q,a}.json (first 1,000 pairs, one chunk per
# GPU, merged and checked: every question_id answered once), then the judge (llava.eval.video_judge:
# OPENAI_API_BASE, OPENAI_API_KEY, JUDGE_MODEL) into results/<run>/<bench>.json with the run's method, config and
# hash, measured visual tokens per layer and tower label (llava.eval.record). Layout: playground/data/README.md
# ('Video QA'). `--limit N` (driver option, default 1000, 0 = all) bounds generation, merge and judge alike.
video_qa() {
    local bench=$1 videos=$2 root=$DATA_ROOT/$1 k pid fail=0 limit=1000
    for ((k = 0; k < ${#GEN_ARGS[@]}; k++)); do  # the driver's --limit also bounds the merge check and the judge
        case ${GEN_ARGS[k]} in
            --limit) limit=${GEN_ARGS[k + 1]:-$limit} ;;
            --limit=*) limit=${GEN_ARGS[k]#--limit=} ;;
        esac
    done
    require_path "$root/test_q.json" "$bench's test_q.json (Video-LLaVA's eval GT files)"
    require_path "$root/test_a.json" "$bench's test_a.json (Video-LLaVA's eval GT files)"
    require_path "$root/$videos" "the $bench videos (see playground/data/README.md)"
    local out=$root/answers/$CKPT
    mkdir -p "$out"
    for ((k = 0; k < CHUNKS; k++)); do
        CUDA_VISIBLE_DEVICES=${GPU_LIST[$k]:-${CUDA_VISIBLE_DEVICES:-}} "$PY" -m llava.eval.model_video_qa \
            --model_path "$MODEL_PATH" --video_dir "$root/$videos" --gt_file_question "$root/test_q.json" \
            --gt_file_answers "$root/test_a.json" --output_dir "$out" --output_name "${CHUNKS}_$k" \
            --num_chunks "$CHUNKS" --chunk_idx "$k" --config "$CONFIG" --device "$DEVICE" "${GEN_ARGS[@]}" &
        CHILD_PIDS+=($!)
    done
    for pid in "${CHILD_PIDS[@]}"; do
        wait "$pid" || { local status=$?; [[ $fail -ne 0 && $fail -ne 2 ]] || fail=$status; }
    done
    CHILD_PIDS=()
    [[ $fail -eq 0 ]] || generation_failed "$fail"
    local merged=$out/merge.jsonl
    "$PY" -m llava.eval.merge_chunks --chunk-dir "$out" --num-chunks "$CHUNKS" --question-file "$root/test_q.json" \
        --format video --limit "$limit" --output "$merged" || die "merging the chunk answer files failed (see above)"
    "$PY" -m llava.eval.video_judge --pred-file "$merged" --limit "$limit" --output-dir "$out/judge" \
        --output-json "$(result_file "$bench")" --extra "$(record_extra "$merged")" \
        || die "judging failed (see above); rerun to resume"
}
