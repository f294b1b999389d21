#!/usr/bin/env bash
# POPE (docs/pipeline.md, 'POPE'): answers -> labels matched by (image, question) -> per-split acc/P/R/F1, mean acc and F1.
# Usage: bash scripts/eval/pope.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
POPE=$DATA_ROOT/pope
require_path "$POPE/llava_pope_test.jsonl" "the LLaVA POPE question file llava_pope_test.jsonl (LLaVA eval.zip)"
require_path "$POPE/val2014" "the COCO val2014 images (val2014.zip from cocodataset.org)"
require_path "$POPE/coco" "the POPE label files coco_pope_{adversarial,popular,random}.json (POPE repo, output/coco/)"
ANSWERS=$POPE/answers/$CKPT.jsonl
generate llava.eval.model_vqa_loader "$ANSWERS" "" "$POPE/llava_pope_test.jsonl" --image-folder "$POPE/val2014"
"$PY" -m llava.eval.scoring.pope --answers "$ANSWERS" --question-file "$POPE/llava_pope_test.jsonl" \
    --annotation-dir "$POPE/coco" --output-json "$(result_file pope)" --extra "$(record_extra "$ANSWERS")"
