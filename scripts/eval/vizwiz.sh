#!/usr/bin/env bash
# VizWiz test (docs/pipeline.md, 'VizWiz'): answers -> EvalAI upload file (scored on the server; local accuracy only with
# VIZWIZ_ANNOTATION=<VizWiz-format annotations of the questions>, e.g. on the val split).
# Usage: bash scripts/eval/vizwiz.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
VW=$DATA_ROOT/vizwiz
require_path "$VW/llava_test.jsonl" "the LLaVA VizWiz question file llava_test.jsonl (LLaVA eval.zip)"
require_path "$VW/test" "the VizWiz test images (test.zip from vizwiz.org, extracted to vizwiz/test/)"
ANSWERS=$VW/answers/$CKPT.jsonl
UPLOAD=$VW/answers_upload/$CKPT.json
generate llava.eval.model_vqa_loader "$ANSWERS" "" "$VW/llava_test.jsonl" --image-folder "$VW/test"
if [[ -n "${VIZWIZ_ANNOTATION:-}" ]]; then
    "$PY" -m llava.eval.scoring.vizwiz --answers "$ANSWERS" --question-file "$VW/llava_test.jsonl" \
        --upload-file "$UPLOAD" --val-annotations "$VIZWIZ_ANNOTATION" \
        --output-json "$(result_file vizwiz)" --extra "$(record_extra "$ANSWERS")"
else
    "$PY" -m llava.eval.scoring.vizwiz --answers "$ANSWERS" --question-file "$VW/llava_test.jsonl" --upload-file "$UPLOAD"
    record_pending vizwiz "$ANSWERS" "$UPLOAD"
fi
