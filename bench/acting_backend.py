"""Acting step per frame in torch vs numpy, per input trunk: the measurement behind
mop.collection.acting_backend's rule (docs/speed.md, "Acting backend").

One worker's acting batch (8 envs of a level, the default policy shapes, one thread) is stepped
`--repeats` times by each backend; prints ms per frame, the ratio and the largest logit difference.

    python bench/acting_backend.py
    python bench/acting_backend.py --task_id BabyAI-GoToLocal-v0 --envs 16 --repeats 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> dict:
    import torch

    from mixture_of_experts import build_policy
    from mop.babyai_env import make_env, obs_dim, quiet_reset
    from mop.collection import MissionCache, ObsBatch, acting_backend, measure_acting
    from mop.language import build_mission_encoder
    from mop.numpy_policy import use_one_thread

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task_id", default="BabyAI-Unlock-v0")
    parser.add_argument("--envs", type=int, default=8, help="rows per acting step (one worker's envs)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    use_one_thread()
    envs = [make_env(args.task_id) for _ in range(args.envs)]
    batch = ObsBatch.of(envs, [quiet_reset(e, i) for i, e in enumerate(envs)])
    rows = {}
    for trunk in ("linear", "bilinear", "film"):
        torch.manual_seed(0)
        policy = build_policy(
            {"policy_type": "mop", "input_dim": obs_dim("onehot"), "lang_dim": 32, "hidden_size": 64,
             "intermediate_dim": 64, "expert_hidden_sizes": [[0, 16, 32]] * 3, "router_hidden_size": 64,
             "num_actions": 7, "input_encoder": trunk, "trunk_channels": 128}
        ).eval()  # fmt: skip
        r = measure_acting(
            policy, MissionCache(build_mission_encoder("bow", 32)), "onehot", batch, args.repeats
        )
        per = {k: r[k] / args.envs * 1e3 for k in ("torch", "numpy")}
        rows[trunk] = {**per, "torch_over_numpy": r["torch"] / r["numpy"], "chosen": acting_backend(policy)}
        print(
            f"{trunk:9s} torch {per['torch']:.3f} ms/frame  numpy {per['numpy']:.3f} ms/frame  "
            f"torch/numpy {r['torch'] / r['numpy']:.2f}  max logit diff {r['max_logit_diff']:.1e}  "
            f"-> acting_backend: {acting_backend(policy)}"
        )
    return rows


if __name__ == "__main__":
    main()
