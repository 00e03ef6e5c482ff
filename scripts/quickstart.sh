#!/usr/bin/env bash
# Set everything up, then run the main job on a small default: train a MoP policy on
# BabyAI-GoToLocal-v0 for a few minutes (checkpoints/ + metrics.jsonl), then evaluate every
# checkpoint (evaluation_results.csv + the routing cache in evaluation_cache/), then render the
# standard figures of every cache into plots/.
# Extra arguments go to train_mop.py, e.g. scripts/quickstart.sh --num_updates 50
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
if [ -f checkpoints/BabyAI-GoToLocal-v0/trial_0/checkpoint_final.pt ]; then
    echo "checkpoints/BabyAI-GoToLocal-v0/trial_0 is already trained; evaluating and plotting it"
else
    .venv/bin/python train_mop.py --config config.yaml --task_id BabyAI-GoToLocal-v0 --trial 0 \
        --num_updates 300 --checkpoint_interval 100 "$@"
fi
.venv/bin/python batch_eval.py --checkpoint_dir checkpoints --task BabyAI-GoToLocal-v0 --trial 0 --num_episodes 200
.venv/bin/python -c "import pandas as pd; print(pd.read_csv('evaluation_results.csv')[['checkpoint_path', 'success_rate', 'path_ratio', 'mean_lpc']].to_string())"
.venv/bin/python render_plots.py --all --cache_dir evaluation_cache --out plots
