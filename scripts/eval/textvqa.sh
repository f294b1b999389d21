#!/usr/bin/env bash
# TextVQA val with OCR tokens in the prompt (docs/pipeline.md, 'TextVQA'): answers -> VQA accuracy (EvalAI normalisation).
# Usage: bash scripts/eval/textvqa.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
TVQA=$DATA_ROOT/textvqa
QUESTIONS=$TVQA/llava_textvqa_val_v051_ocr.jsonl
require_path "$QUESTIONS" "the LLaVA TextVQA question file llava_textvqa_val_v051_ocr.jsonl (LLaVA eval.zip)"
require_path "$TVQA/train_images" "the TextVQA train/val images (train_val_images.zip, extracted to textvqa/train_images/)"
require_path "$TVQA/TextVQA_0.5.1_val.json" "the TextVQA annotations TextVQA_0.5.1_val.json (textvqa.org)"
ANSWERS=$TVQA/answers/$CKPT.jsonl
generate llava.eval.model_vqa_loader "$ANSWERS" "" "$QUESTIONS" --image-folder "$TVQA/train_images"
"$PY" -m llava.eval.scoring.textvqa --answers "$ANSWERS" --annotation-file "$TVQA/TextVQA_0.5.1_val.json" \
    --output-json "$(result_file textvqa)" --extra "$(record_extra "$ANSWERS")"
