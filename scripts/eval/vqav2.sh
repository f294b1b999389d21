#!/usr/bin/env bash
# VQAv2 test-dev (docs/pipeline.md, 'VQAv2'): answers (one chunk per GPU) -> EvalAI upload over all test2015 questions
# (scored on the server; local accuracy only with VQAV2_ANNOTATION=<official annotations>, e.g. val).
# Usage: bash scripts/eval/vqav2.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh; SPLIT)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
SPLIT=${SPLIT:-llava_vqav2_mscoco_test-dev2015}
VQA=$DATA_ROOT/vqav2
require_path "$VQA/$SPLIT.jsonl" "the LLaVA VQAv2 question file $SPLIT.jsonl (LLaVA eval.zip)"
require_path "$VQA/llava_vqav2_mscoco_test2015.jsonl" "the full test2015 question file llava_vqav2_mscoco_test2015.jsonl (LLaVA eval.zip)"
require_path "$VQA/test2015" "the COCO test2015 images (test2015.zip from cocodataset.org)"
ANSWERS=$VQA/answers/$SPLIT/$CKPT
UPLOAD=$VQA/answers_upload/$SPLIT/$CKPT.json
generate llava.eval.model_vqa_loader "$ANSWERS/merge.jsonl" "$ANSWERS" "$VQA/$SPLIT.jsonl" --image-folder "$VQA/test2015"
SCORE=(--answers "$ANSWERS/merge.jsonl" --question-file "$VQA/llava_vqav2_mscoco_test2015.jsonl" --upload-file "$UPLOAD")
if [[ -n "${VQAV2_ANNOTATION:-}" ]]; then
    "$PY" -m llava.eval.scoring.vqav2 "${SCORE[@]}" --annotation-file "$VQAV2_ANNOTATION" \
        --output-json "$(result_file vqav2)" --extra "$(record_extra "$ANSWERS/merge.jsonl")"
else
    "$PY" -m llava.eval.scoring.vqav2 "${SCORE[@]}"
    record_pending vqav2 "$ANSWERS/merge.jsonl" "$UPLOAD"
fi
