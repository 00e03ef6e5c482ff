#!/usr/bin/env bash
# Set everything up, then run the main job on a small default: train a MoP policy on
# BabyAI-GoToLocal-v0 for a few minutes (checkpoints/ + metrics.jsonl), then evaluate every
# checkpoint (evaluation_results.csv + the routing cache in evaluation_cache/).
# Extra arguments go to train_mop.py, e.g. scripts/quickstart.sh --num_updates 50
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
.venv/bin/python train_mop.py --config config.yaml --task_id BabyAI-GoToLocal-v0 --trial 0 \
    --num_updates 300 --checkpoint_interval 100 "$@"
.venv/bin/python batch_eval.py --checkpoint_dir checkpoints --task BabyAI-GoToLocal-v0 --trial 0 --num_episodes 200
.venv/bin/python -c "import pandas as pd; print(pd.read_csv('evaluation_results.csv')[['checkpoint_path', 'success_rate', 'path_ratio', 'mean_lpc']].to_string())"
