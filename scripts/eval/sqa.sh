#!/usr/bin/env bash
# ScienceQA test (docs/pipeline.md, 'ScienceQA'): answers (text-only problems without image) -> letter parsing -> Accuracy, IMG-Accuracy.
# Usage: bash scripts/eval/sqa.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
SQA=$DATA_ROOT/scienceqa
require_path "$SQA/llava_test_CQM-A.json" "the LLaVA ScienceQA question file llava_test_CQM-A.json (LLaVA eval.zip)"
require_path "$SQA/images/test" "the ScienceQA test images as images/test/<id>/image.png (ScienceQA release)"
ANSWERS=$SQA/answers/$CKPT.jsonl
generate llava.eval.model_vqa_science "$ANSWERS" "" "$SQA/llava_test_CQM-A.json" --image-folder "$SQA/images/test" \
    --single-pred-prompt
"$PY" -m llava.eval.scoring.scienceqa --answers "$ANSWERS" --question-file "$SQA/llava_test_CQM-A.json" \
    --output-file "$SQA/answers/${CKPT}_output.jsonl" --output-json "$(result_file scienceqa)" \
    --extra "$(record_extra "$ANSWERS")"
