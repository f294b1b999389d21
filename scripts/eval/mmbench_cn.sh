#!/usr/bin/env bash
# MMBench-CN (docs/pipeline.md, 'MMBench'): the MMBench pipeline with the Chinese instruction and the mmbench_cn/ folder.
# Usage: bash scripts/eval/mmbench_cn.sh [CONFIG.yaml] [driver options...]   (environment: see common.sh; SPLIT)
MMB_LANG=cn exec bash "$(dirname "${BASH_SOURCE[0]}")/mmbench.sh" "$@"
