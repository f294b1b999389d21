#!/usr/bin/env bash
# msvd video QA (Video-LLaVA's Table 3 protocol): answers for the first 1,000 QA pairs, then the GPT-style judge.
# Usage: bash scripts/eval/msvd.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh; judge: video_qa.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/video_qa.sh"
[[ $# -gt 0 && "$1" != -* ]] || [[ " $* " == *" --config"* ]] || set -- configs/none/video_llava.yaml "$@"
eval_setup "$@"
video_qa msvd videos
