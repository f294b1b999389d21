#!/usr/bin/env bash
# GQA test-dev balanced (docs/pipeline.md, 'GQA'): answers (one chunk per GPU) -> predictions file -> exact-match accuracy.
# Usage: bash scripts/eval/gqa.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
SPLIT=llava_gqa_testdev_balanced
GQA=$DATA_ROOT/gqa
require_path "$GQA/$SPLIT.jsonl" "the LLaVA GQA question file $SPLIT.jsonl (LLaVA eval.zip)"
require_path "$GQA/data/images" "the GQA images (images.zip of the GQA release, extracted to gqa/data/images/)"
require_path "$GQA/data/testdev_balanced_questions.json" "the official GQA testdev_balanced_questions.json (questions1.2.zip)"
ANSWERS=$GQA/answers/$SPLIT/$CKPT
generate llava.eval.model_vqa_loader "$ANSWERS/merge.jsonl" "$ANSWERS" "$GQA/$SPLIT.jsonl" --image-folder "$GQA/data/images"
"$PY" -m llava.eval.scoring.gqa --answers "$ANSWERS/merge.jsonl" \
    --predictions-out "$ANSWERS/testdev_balanced_predictions.json" \
    --questions "$GQA/data/testdev_balanced_questions.json" \
    --output-json "$(result_file gqa)" --extra "$(record_extra "$ANSWERS/merge.jsonl")"
