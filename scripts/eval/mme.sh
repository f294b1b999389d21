#!/usr/bin/env bash
# MME (docs/pipeline.md, 'MME'): answers in question order -> per-category txt files -> official acc / acc+ / score (P, C, P+C).
# Usage: bash scripts/eval/mme.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_setup "$@"
MME=$DATA_ROOT/MME
RELEASE=$MME/MME_Benchmark_release_version
require_path "$MME/llava_mme.jsonl" "the LLaVA MME question file llava_mme.jsonl (LLaVA eval.zip)"
require_path "$RELEASE" "the MME release (images + question/answer txt files) as MME_Benchmark_release_version/"
ANSWERS=$MME/answers/$CKPT.jsonl
generate llava.eval.model_vqa_loader "$ANSWERS" "" "$MME/llava_mme.jsonl" --image-folder "$RELEASE"
"$PY" -m llava.eval.scoring.mme --answers "$ANSWERS" --release-dir "$RELEASE" \
    --txt-dir "$MME/eval_tool/answers/$CKPT" --output-json "$(result_file mme)" --extra "$(record_extra "$ANSWERS")"
