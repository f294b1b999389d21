#!/usr/bin/env bash
# MMBench (docs/pipeline.md, 'MMBench'; MMB_LANG=cn for MMBench-CN): answers per TSV row -> submission file, and
# CircularEval accuracy when the TSV has answers (dev split; the test split is scored on the server).
# Usage: bash scripts/eval/mmbench.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh; SPLIT)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
if [[ "${MMB_LANG:-en}" == cn ]]; then
    BENCH=mmbench_cn; SPLIT=${SPLIT:-mmbench_dev_cn_20231003}
else
    BENCH=mmbench; SPLIT=${SPLIT:-mmbench_dev_20230712}
fi
MMB=$DATA_ROOT/$BENCH
require_path "$MMB/$SPLIT.tsv" "the $BENCH TSV $SPLIT.tsv (MMBench release; the paper uses the TEST legacy TSVs)"
ANSWERS=$MMB/answers/$SPLIT/$CKPT.jsonl
UPLOAD=$MMB/answers_upload/$SPLIT/$CKPT.xlsx
RESULT=$(result_file "$BENCH")
generate llava.eval.model_vqa_mmbench "$ANSWERS" "" "$MMB/$SPLIT.tsv" --lang "${MMB_LANG:-en}" --single-pred-prompt
mkdir -p "$(dirname "$UPLOAD")"
SCORED=$RESULT.new  # the scorer writes a result only for a split with answers; an older result stays until then
rm -f "$SCORED"
"$PY" -m llava.eval.scoring.mmbench --answers "$ANSWERS" --annotation-file "$MMB/$SPLIT.tsv" --benchmark "$BENCH" \
    --upload-file "$UPLOAD" --output-json "$SCORED" --extra "$(record_extra "$ANSWERS")"
if [[ -f "$SCORED" ]]; then
    mv "$SCORED" "$RESULT"
else  # test split: no answers in the TSV, scored on the server
    record_pending "$BENCH" "$ANSWERS" "$UPLOAD"
fi
