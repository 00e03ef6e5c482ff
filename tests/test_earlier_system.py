"""The earlier system's last incompatibilities (issue 35), each built exactly as it writes its files
(../shared/reference_facts.md): its users' caches, CSVs, config files and flags keep working here.

1. A seeded run's last update: its cache goes to `<cache>/<task>/trial_N/seed_S/update_U/` (where
   its tools look: the largest update_U/ is the latest), and a results CSV mixing its rows
   (`checkpoint_<U>.pt`) and ours (`checkpoint_final.pt` holding update U) holds those weights once
   and never has them evaluated again.
2. A config with `input_dim` (every config of its, and the MoP integration guide's YAML) trains its
   network when the value matches, says so in one line, and refuses a value no encoding produces.
3. The JSON export's target_pos / dist_to_target follow its rule (first matching object in
   grammatical order), our Parquet keeps ours.
4. The seed-metrics export names the phase of levels without phases "None" and uses its default
   phase system, so its `seed_agg_plots.py --from_csv` finds the columns; `--final-only` works.

    pytest tests/test_earlier_system.py -m "not slow"
"""

import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import batch_eval
import modal_app
import seed_metrics as sm
import train_mop
from conftest import tiny_config
from mop import experiment, legacy_config, phases
from mop.babyai_env import env_context, legacy_target_pos, make_env, quiet_reset, target_objects
from mop.experiment import ConfigError, load_config
from mop.results import LEGACY_COLUMNS, evaluation_identity, merge_results, read_results
from mop.routing_cache import JSON_FILE, derive_step_columns, weight_column, write_cache, write_legacy_json
from mop.runs import CheckpointRef, cache_dir_for

ROOT = Path(__file__).resolve().parent.parent
UNLOCK = "BabyAI-UnlockPickup-v0"
RUN = f"modal_checkpoints/{UNLOCK}/trial_20/seed_3"


# ----------------------------------------------------------------------------- 1. a seeded run's last update


def test_a_seeded_final_checkpoint_caches_under_its_update():
    config = {"task_id": UNLOCK, "trial": 20, "seed": 3, "update": 5000}
    final = f"{RUN}/checkpoint_final.pt"
    assert cache_dir_for("c", config, final) == Path("c", UNLOCK, "trial_20", "seed_3", "update_5000")
    assert cache_dir_for("c", config, final, None, "largest") == Path(
        "c", UNLOCK, "trial_20", "seed_3", "update_5000", "knockout_largest"
    )
    # the numbered copy of those weights (the earlier system's) caches in the same folder
    assert cache_dir_for("c", config, f"{RUN}/checkpoint_5000.pt") == cache_dir_for("c", config, final)
    # unseeded runs too (its batch_eval wrote update_<U>/ for every run: a later final never
    # overwrites this one); a config without its update keeps the run's own folder
    unseeded = {**config, "seed": None}
    assert cache_dir_for("c", unseeded, "x/checkpoint_final.pt") == Path(
        "c", UNLOCK, "trial_20", "update_5000"
    )
    assert cache_dir_for("c", {**config, "update": None}, final) == Path("c", UNLOCK, "trial_20", "seed_3")


def its_row(update: int, name: str | None = None, success: float = 0.5) -> dict:
    """A row as its batch_eval wrote it: its 20 columns, checkpoint_path relative to the folder's
    parent, the numbered name of a seeded run's weights."""
    return {
        "checkpoint_path": f"{RUN}/{name or f'checkpoint_{update}.pt'}",
        "task_id": UNLOCK,
        "trial": 20,
        "seed": 3,
        "update": update,
        "num_episodes": 1000,
        "success_rate": success,
        "path_ratio": 1.4,
        "mean_lpc": 900.0,
        "bot_plan_failures": 0,
        "num_updates": 5000,
        "unroll_len": 32,
        "lr": 3e-4,
        "lpc_alpha": 1e-4,
        "expert_hidden_sizes": "[[0, 16, 32], [0, 16, 32], [0, 16, 32]]",
        "intermediate_dim": 64,
        "router_hidden_size": 64,
        "max_steps": None,
        "lang_dim": 32,
        "evaluated_at": "2026-03-27T12:00:00",
    }


def test_a_mixed_csv_holds_one_set_of_weights_once(tmp_path):
    csv = tmp_path / "evaluation_results.csv"
    pd.DataFrame([its_row(4750), its_row(5000)], columns=LEGACY_COLUMNS).to_csv(csv, index=False)
    ours = {**its_row(5000, "checkpoint_final.pt", success=0.6), "eval_task_id": UNLOCK, "knockout": "none"}
    table = merge_results(csv, [ours])
    assert len(table) == 2 and sorted(table["update"]) == [4750, 5000]
    assert table.loc[table["update"] == 5000, "success_rate"].tolist() == [0.6]  # the new row replaced it
    # a file that already holds both (merged before this rule) is read as one evaluation
    both = pd.DataFrame([its_row(5000), ours], columns=[*LEGACY_COLUMNS, "eval_task_id", "knockout"])
    both.to_csv(csv, index=False)
    assert len(read_results(csv)) == 1
    # other evaluations of the same weights stay apart: another knockout, another level, another run
    assert evaluation_identity(f"{RUN}/checkpoint_final.pt", 5000, UNLOCK, "none") == evaluation_identity(
        f"./{RUN}/checkpoint_5000.pt", None, UNLOCK, "none"
    )
    assert evaluation_identity(f"{RUN}/checkpoint_final.pt", 5000, UNLOCK, "largest") != evaluation_identity(
        f"{RUN}/checkpoint_5000.pt", 5000, UNLOCK, "none"
    )
    assert evaluation_identity(f"{RUN}/checkpoint_final.pt", 5000, UNLOCK) != evaluation_identity(
        RUN.replace("modal_", "") + "/checkpoint_5000.pt", 5000, UNLOCK
    )


def test_an_older_csv_of_ours_still_merges(tmp_path):
    """Rows written before the identity rule: a numbered checkpoint and the final one of another
    update (both kept), an unseeded final, and a file outside the run layout keyed by its path."""
    csv = tmp_path / "evaluation_results.csv"
    base = {"task_id": UNLOCK, "eval_task_id": UNLOCK, "knockout": "none", "trial": 0, "success_rate": 0.1}
    rows = [
        {**base, "checkpoint_path": f"checkpoints/{UNLOCK}/trial_0/seed_1/checkpoint_3.pt", "update": 3, "seed": 1},
        {**base, "checkpoint_path": f"checkpoints/{UNLOCK}/trial_0/seed_1/checkpoint_final.pt", "update": 6, "seed": 1},
        {**base, "checkpoint_path": f"checkpoints/{UNLOCK}/trial_0/checkpoint_final.pt", "update": 6},
        {**base, "checkpoint_path": "elsewhere/x.pt", "update": 6},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(csv, index=False)
    table = merge_results(csv, [{**rows[-1], "success_rate": 0.9}])
    assert len(table) == 4 and table["success_rate"].tolist().count(0.9) == 1


def test_weights_a_row_of_either_system_covers_are_not_evaluated_again():
    final = CheckpointRef(f"{RUN}/checkpoint_final.pt", UNLOCK, 20, 3, None, final_update=5000)
    numbered = CheckpointRef(f"{RUN}/checkpoint_5000.pt", UNLOCK, 20, 3, 5000)
    its_csv = pd.DataFrame([its_row(5000)]).assign(eval_task_id=UNLOCK, knockout="none")
    ours = its_csv.assign(checkpoint_path=f"{RUN}/checkpoint_final.pt")
    assert batch_eval.plan_jobs([final], its_csv, None, "none", False) == []
    assert batch_eval.plan_jobs([numbered], ours, None, "none", False) == []
    assert batch_eval.plan_jobs([final], its_csv, None, "none", True) == [(final, None)]
    assert batch_eval.plan_jobs([final], its_csv, None, "largest", False) == [(final, None)]
    resumed = CheckpointRef(final.path, UNLOCK, 20, 3, None, final_update=6000)  # trained on: new weights
    assert batch_eval.plan_jobs([resumed], its_csv, None, "none", False) == [(resumed, None)]


def its_latest_caches(cache_dir: Path, task: str, trial: int) -> dict[int, int]:
    """Its discover_seeded_caches without --update (reference §8.4): per seed_S/, the largest
    update_U/ holding routing_data.json."""
    found = {}
    for seed_dir in sorted((cache_dir / task / f"trial_{trial}").glob("seed_*")):
        updates = [int(d.name[7:]) for d in seed_dir.glob("update_*") if (d / JSON_FILE).exists()]
        if updates:
            found[int(seed_dir.name[5:])] = max(updates)
    return found


@pytest.mark.slow
def test_its_tools_find_a_seeded_runs_last_update_and_nothing_is_evaluated_twice(tmp_path):
    cfg = tiny_config(tmp_path / "checkpoints", seed=1)
    train_mop.main(cfg, progress=False)
    run = tmp_path / "checkpoints" / cfg.task_id / "trial_0" / "seed_1"
    cache, csv = tmp_path / "evaluation_cache", tmp_path / "evaluation_results.csv"
    common = ["--checkpoint_dir", str(tmp_path / "checkpoints"), "--num_episodes", "2", "--num_envs", "2"]
    common += ["--results_path", str(csv), "--cache_dir", str(cache), "--cache_format", "json"]
    batch_eval.main(common)
    assert its_latest_caches(cache, cfg.task_id, 0) == {1: cfg.num_updates}  # not update 3, the one before
    doc = json.loads((cache / cfg.task_id / "trial_0" / "seed_1" / "update_6" / JSON_FILE).read_text())
    assert doc["checkpoint_path"].endswith("checkpoint_6.pt")  # the name its batch_eval skips by
    # its layout of the same run (the final weights as two copies) and its CSV row for them
    (run / "checkpoint_6.pt").unlink()
    shutil.copy(run / "checkpoint_final.pt", run / "checkpoint_6.pt")
    table = pd.read_csv(csv)
    its = table[table["update"] == 6].assign(
        checkpoint_path=lambda t: t["checkpoint_path"].str.replace("final", "6")
    )
    its[LEGACY_COLUMNS].to_csv(csv, index=False)
    out = batch_eval.main(common)
    assert out["evaluated"] == [r for r in out["evaluated"] if r["update"] == 3]  # only checkpoint_3.pt
    assert sorted(read_results(csv)["update"]) == [3, 6]


# ----------------------------------------------------------------------------- 2. input_dim

# The MoP integration guide's config (seed 002), as written there.
GUIDE_YAML = """\
# Original parameters (still used)
task_id: "BabyAI-GoToRedBall-v0"
num_envs: 16
unroll_len: 32
num_updates: 10000
lr: 0.0003
input_dim: 152  # without language
lang_dim: 128

# New MoP-specific parameters
mop_layers: ["32,64,128", "64,128,256"]
mop_intermediate_dim: 256
mop_router_dim: 64
"""
# Its deleted configs/quick_test.yaml (reference §1.8).
QUICK_TEST_YAML = """\
task_id: BabyAI-GoToObj-v0
trial: 0
num_envs: 8
hidden_size: 64
unroll_len: 10
num_updates: 100
lr: 0.001
log_interval: 5
input_dim: 152
lang_dim: 128
"""


def test_its_configs_select_its_network_and_say_so(tmp_path, capsys):
    guide, quick = tmp_path / "guide.yaml", tmp_path / "quick_test.yaml"
    guide.write_text(GUIDE_YAML)
    quick.write_text(QUICK_TEST_YAML)
    legacy_config._NOTED.clear()
    for path in (guide, quick):
        cfg = load_config(path)
        assert (cfg.input_dim, cfg.obs_encoding, cfg.input_encoder, cfg.lang_encoder) == (
            152,
            "raw",
            "linear",
            "distilbert",
        )
        assert cfg.lang_dim == 128
    assert load_config(guide).expert_hidden_sizes == [[32, 64, 128], [64, 128, 256]]
    # no expert keys (quick_test.yaml, large_scale.yaml): its train_mop.py's layer sizes, not ours
    quick_cfg = load_config(quick)
    assert (quick_cfg.expert_hidden_sizes, quick_cfg.intermediate_dim, quick_cfg.router_hidden_size) == (
        [[32, 64, 128]],
        256,
        64,
    )
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: input_dim")]
    network = (
        "note: input_dim 152 trains the earlier system's network: obs_encoding raw, input_encoder linear, "
        "lang_encoder distilbert"
    )
    assert notes == [
        network,
        network + "; no expert_hidden_sizes/intermediate_dim/router_hidden_size given: its train_mop.py "
        "defaults expert_hidden_sizes [[32, 64, 128]], intermediate_dim 256, router_hidden_size 64",
    ]  # one line per config, once
    assert load_config(quick, {"intermediate_dim": 32}).intermediate_dim == 32  # a key given wins
    # a key the same source gives wins over what input_dim selects; the command line over the file
    assert load_config(guide, {"lang_encoder": "bow"}).lang_encoder == "bow"
    assert load_config(guide, {"input_dim": 985}).obs_encoding == "onehot"
    assert load_config(ROOT / "config.yaml", {"input_dim": 152}).obs_encoding == "raw"
    assert load_config(ROOT / "config.yaml").input_dim is None  # ours: from obs_encoding


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"input_dim": 280}, "152 (obs_encoding raw"),
        ({"input_dim": 280}, "lang_dim 128 comes on top"),
        ({"input_dim": 151}, "or 985 (onehot)"),
        ({"input_dim": 0}, "no observation encoding's size"),
        ({"input_dim": "x"}, "'input_dim' must be int"),
        ({"obs_encoding": "onehot"}, "input_dim 152 is obs_encoding 'raw', but obs_encoding is 'onehot'"),
    ],
)
def test_an_input_dim_no_encoding_produces_is_refused(tmp_path, overrides, message):
    guide = tmp_path / "guide.yaml"
    guide.write_text(GUIDE_YAML)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(guide, overrides)


def test_a_resumed_or_compared_run_reads_input_dim_from_its_encoding():
    ours = experiment.recipe_keys(load_config(None, {"task_id": "BabyAI-GoToLocal-v0"}))
    stored = {**ours, "input_dim": 985}  # a checkpoint's config holds the resolved size
    assert experiment.config_changes(stored, ours) == []
    assert experiment.config_changes({**stored, "input_dim": 152, "obs_encoding": "raw"}, ours) != []


def test_its_config_offline_is_one_line_naming_the_way_out(tmp_path, capsys, monkeypatch):
    """DistilBERT's weights cannot be downloaded here: its network's mission encoder is refused in
    one line that names --distilbert_path and --lang_encoder bow, and nothing is written."""
    import sys

    guide = tmp_path / "guide.yaml"
    guide.write_text(GUIDE_YAML.replace("BabyAI-GoToRedBall-v0", "BabyAI-GoToRedBallGrey-v0"))
    args = ["train_mop.py", "--config", str(guide), "--checkpoint_dir", str(tmp_path / "ck")]
    args += ["--distilbert_path", str(tmp_path / "no_bert"), "--num_workers", "0"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        experiment.cli_main(train_mop.main, train_mop.__doc__)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "--distilbert_path DIR" in err[0] and "--lang_encoder bow" in err[0]
    assert not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_its_quick_test_config_trains_its_layer_sizes_and_notes_missing_wandb(
    tmp_path, tiny_distilbert, capsys, monkeypatch
):
    """Its quick_test.yaml (input_dim 152, no expert keys) with its large_scale.yaml's
    wandb_project: the run trains its train_mop.py network ([32, 64, 128] experts, intermediate
    256, router 64), and without the wandb package says so in one note line and logs to
    metrics.jsonl as always."""
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as if not installed
    quick = tmp_path / "quick_test.yaml"
    quick.write_text(
        QUICK_TEST_YAML.replace("BabyAI-GoToObj-v0", "BabyAI-GoToRedBallGrey-v0")
        + "wandb_project: babyai-gru\n"
    )
    small = {"num_envs": 2, "unroll_len": 4, "num_updates": 2, "log_interval": 1, "num_workers": 0}
    cfg = load_config(
        quick, {**small, "distilbert_path": tiny_distilbert, "checkpoint_dir": str(tmp_path / "ck")}
    )
    summary = train_mop.main(cfg, progress=False)
    notes = [line for line in capsys.readouterr().out.splitlines() if "wandb" in line]
    assert notes == [
        "note: wandb_project 'babyai-gru': wandb is not installed, so the metrics go to metrics.jsonl only"
    ]
    assert [r["update"] for r in experiment.read_metrics(summary["metrics_path"])] == [1, 2]
    weights = torch.load(Path(summary["run_dir"]) / "checkpoint_final.pt", weights_only=True)[
        "policy_state_dict"
    ]
    assert weights["input_projection.weight"].shape == (256, 152 + 128)
    assert weights["layers.0.router.gru.weight_hh_l0"].shape[1] == 64
    assert [weights[f"layers.0.experts.{j}.gru.weight_hh_l0"].shape[1] for j in range(3)] == [32, 64, 128]
    assert not any(k.startswith("layers.1.") for k in weights)  # one layer


@pytest.mark.slow
def test_its_batch_eval_skip_rule_finds_our_last_update_row(tmp_path, monkeypatch):
    """Its batch_eval skips a checkpoint whose path relative to the checkpoint folder's parent is a
    checkpoint_path of the CSV, and evaluates 4-part (seeded) checkpoint_final.pt aliases never:
    after ours, it finds nothing left, whether the last update's two names are one file (ours)
    or two copies (its runs, and ours on a filesystem without hard links)."""
    monkeypatch.chdir(tmp_path)
    train_mop.main(
        tiny_config("checkpoints", seed=0, num_updates=3, checkpoint_interval=None), progress=False
    )
    run = Path("checkpoints") / "BabyAI-GoToRedBallGrey-v0" / "trial_0" / "seed_0"
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == ["checkpoint_3.pt", "checkpoint_final.pt"]

    def its_plan(results: str) -> list[str]:
        done = set(pd.read_csv(results)["checkpoint_path"])
        found = sorted(Path("checkpoints").rglob("checkpoint_*.pt"))  # relative to the folder's parent
        rel = [p.as_posix() for p in found]
        return [
            p
            for p in rel
            if not (len(Path(p).parts) == 5 and p.endswith("checkpoint_final.pt")) and p not in done
        ]

    common = ["--num_episodes", "2", "--num_envs", "2", "--skip_routing"]
    batch_eval.main([*common, "--results_path", "linked.csv"])
    assert its_plan("linked.csv") == []
    (run / "checkpoint_3.pt").unlink()
    shutil.copy(run / "checkpoint_final.pt", run / "checkpoint_3.pt")  # two copies, as it wrote them
    batch_eval.main([*common, "--results_path", "copies.csv"])
    assert its_plan("copies.csv") == [] and len(pd.read_csv("copies.csv")) == 1


@pytest.mark.slow
def test_its_config_trains_its_network(tmp_path, tiny_distilbert):
    guide = tmp_path / "guide.yaml"
    guide.write_text(GUIDE_YAML.replace("BabyAI-GoToRedBall-v0", "BabyAI-GoToRedBallGrey-v0"))
    small = {"num_envs": 2, "unroll_len": 4, "num_updates": 2, "num_workers": 0, "lang_dim": 16}
    small |= {"mop_layers": "0,8", "mop_intermediate_dim": 16, "mop_router_dim": 8}
    cfg = load_config(
        guide, {**small, "distilbert_path": tiny_distilbert, "checkpoint_dir": str(tmp_path / "ck")}
    )
    summary = train_mop.main(cfg, progress=False)
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoint_final.pt", weights_only=True)
    assert ckpt["config"]["input_dim"] == 152 and ckpt["config"]["obs_encoding"] == "raw"
    assert ckpt["policy_state_dict"]["input_projection.weight"].shape == (
        16,
        152 + 16,
    )  # Linear(obs ⊕ mission)
    assert ckpt["encoder_state"]["kind"] == "distilbert"


def test_modal_takes_its_extra_args():
    pytest.importorskip("modal")
    overrides = modal_app.training_overrides(
        "", "", {}, "--lpc_alpha 1e-4 --num_updates 5000 --normalize_lpc"
    )
    assert overrides == {"lpc_alpha": "1e-4", "num_updates": "5000", "normalize_lpc": True}
    assert modal_app.training_overrides("", "", {}, '--mop_layers "16,32;16,32"') == {
        "expert_hidden_sizes": "16,32;16,32"
    }
    for bad, message in (
        ("--bogus 1", "not a flag"),
        ("--seed 3", "set by --seeds"),
        ("--config x.yaml", "entrypoint"),
        ('--lr "1e-3', "No closing quotation"),
    ):
        with pytest.raises(modal_app.LaunchError, match=message):
            modal_app.training_overrides("", "", {}, bad)
    with pytest.raises(modal_app.LaunchError, match="given twice"):
        modal_app.training_overrides("lr=1e-3", "", {}, "--lr 1e-3")


# ----------------------------------------------------------------------------- 3. target_pos in the JSON export


def test_its_target_rule_takes_grammatical_order_and_the_first_match():
    def desc(*positions):
        return SimpleNamespace(obj_poss=list(positions))

    after = SimpleNamespace(
        instr_a=SimpleNamespace(desc=desc((5, 5), (1, 1))), instr_b=SimpleNamespace(desc=desc((2, 2)))
    )
    assert legacy_target_pos(after) == [5, 5]  # instr_a, though AfterInstr runs instr_b first
    assert legacy_target_pos(SimpleNamespace(desc_move=desc((3, 4)), desc_fixed=desc((9, 9)))) == [3, 4]
    assert legacy_target_pos(SimpleNamespace(desc=desc())) is None


def differing_layout(task: str = "BabyAI-GoToLocal-v0"):
    """The first evaluation layout whose nearest target is not the first BabyAI lists."""
    env = make_env(task)
    for seed in range(100):
        quiet_reset(env, seed)
        ctx = env_context(env, target_objects(env)[0])
        if ctx["target_pos"] != ctx["legacy_target_pos"]:
            return env, seed, ctx
    raise AssertionError("no layout of 100 differs")


def test_the_json_export_follows_its_target_rule_and_the_parquet_ours(tmp_path):
    env, seed, ctx = differing_layout()
    assert ctx["legacy_target_pos"] == [int(v) for v in env.instrs.desc.obj_poss[0]]
    x, y = (int(v) for v in env.agent_pos)
    steps = pd.DataFrame({"episode": [0, 0], "t": [0, 1], "x": [x, x], "y": [y, y], "action": [2, 2]})
    steps = steps.assign(carrying=0, lpc=1.0, t_pick=np.nan, t_drop=np.nan)
    episodes = pd.DataFrame(
        {
            "episode": [0],
            "seed": [seed],
            "length": [2],
            "t_unlocked": [np.nan],
            "door_x": [None],
            "door_y": [None],
        }
    ).assign(env_context=[json.dumps(ctx)])
    path = tmp_path / JSON_FILE
    write_legacy_json(path, steps, episodes, {"checkpoint_path": "x", "config": {}, "metrics": {}})
    doc = json.loads(path.read_text())
    assert doc["episodes"][0]["target_pos"] == ctx["legacy_target_pos"]
    assert "legacy_target_pos" not in doc["episodes"][0]
    tx, ty = ctx["legacy_target_pos"]
    assert doc["routing_data"][0]["dist_to_target"] == pytest.approx(math.hypot(x - tx, y - ty))
    # a context recorded before the rule existed exports ours
    old = {k: v for k, v in ctx.items() if k != "legacy_target_pos"}
    write_legacy_json(
        path, steps, episodes.assign(env_context=[json.dumps(old)]), {"config": {}, "metrics": {}}
    )
    assert json.loads(path.read_text())["episodes"][0]["target_pos"] == ctx["target_pos"]


@pytest.mark.slow
def test_an_evaluation_records_both_targets(tiny_run):
    from eval_mop import EvalOptions, evaluate

    result = evaluate(tiny_run.run_dir / "checkpoint_final.pt", EvalOptions(num_episodes=4, num_envs=2))
    contexts = [json.loads(c) for c in result.episodes["env_context"]]
    assert all("legacy_target_pos" in c and "target_pos" in c for c in contexts)


# ----------------------------------------------------------------------------- 4. phase names and flags


def test_its_phase_system_per_level():
    assert phases.legacy_phase_system(UNLOCK) == "key_phase"
    assert phases.legacy_phase_system("BabyAI-OpenTwoDoors-v0") == "unlock_phase"
    for task in ("BabyAI-GoToLocal-v0", "BabyAI-GoToImpUnlock-v0", "BabyAI-OpenDoor-v0"):
        assert phases.legacy_phase_system(task) == "none"
    assert phases.phase_system("BabyAI-GoToImpUnlock-v0") == "unlock_phase"  # ours differs there
    assert phases.legacy_columns(
        ["r_all_lpc_entropy", "mean_lpc_all", "mean_lpc", "r_pre_key_lpc_kl_local"]
    ) == [
        "r_None_lpc_entropy",
        "mean_lpc_None",
        "mean_lpc",
        "r_pre_key_lpc_kl_local",
    ]


def its_from_csv_records(csv: Path, task: str, phase_system: str | None = None) -> list[dict]:
    """Its seed_agg_plots.py --from_csv (reference §8.3/8.4): phase system given, else
    TASK_PHASE_SYSTEM.get(task, 'none'); phases {'none': [None], ...} formatted into r_<phase>_<corr>;
    the last update of each (trial, seed); a missing column is skipped."""
    system = phase_system or {UNLOCK: "key_phase", "BabyAI-OpenTwoDoors-v0": "unlock_phase"}.get(task, "none")
    names = {"key_phase": list(phases.PHASES["key_phase"]), "unlock_phase": ["pre_unlock", "post_unlock"]}
    df = pd.read_csv(csv)
    df = df[df["task_id"] == task]
    df = df[df["update"] == df.groupby(["trial", "seed"])["update"].transform("max")]
    out = []
    for _, row in df.iterrows():
        for phase in names.get(system, [None]):
            for corr in phases.SPATIAL:
                if f"r_{phase}_{corr}" in df.columns:
                    out.append({"seed": row["seed"], "phase": str(phase), "r": row[f"r_{phase}_{corr}"]})
    return out


def synthetic_cache(folder: Path, task: str, seed: int, update: int) -> None:
    """A small cache of ours whose LPC follows the spread of the actions per cell."""
    rng = np.random.default_rng(seed)
    n = 300
    x, y = rng.integers(1, 5, n), rng.integers(1, 5, n)
    action = np.where(rng.random(n) < (x / 5.0), rng.integers(0, 7, n), 2)
    weight = x / 5.0
    recorded = {
        "episode": np.arange(n) // 30,
        "t": np.arange(n) % 30,
        "env_slot": np.zeros(n, dtype=np.int64),
    }
    recorded |= {"x": x, "y": y, "direction": np.zeros(n, dtype=np.int64), "action": action}
    recorded |= {"carrying": np.zeros(n, dtype=np.int64), "dist_to_key": np.full(n, np.nan)}
    recorded |= {"dist_to_target": np.full(n, np.nan)}
    recorded |= {weight_column(0, 0): 1 - weight, weight_column(0, 1): weight}
    episodes = pd.DataFrame({"episode": range(10), "length": 30, "env_context": json.dumps({})})
    for c in ("t_unlocked", "t_pick", "t_drop", "door_x", "door_y"):
        episodes[c] = pd.array([None] * 10, dtype="Int64")
    config = {"task_id": task, "trial": 4, "seed": seed, "update": update, "lpc_alpha": 1e-4}
    config |= {"expert_hidden_sizes": [[0, 16]]}
    meta = {"checkpoint_path": "x", "num_episodes": 10, "config": config, "metrics": {"success_rate": 0.5}}
    write_cache(folder, derive_step_columns(recorded, episodes, config), episodes, meta)


@pytest.mark.parametrize("task", ["BabyAI-GoToLocal-v0", "BabyAI-GoToImpUnlock-v0"])
def test_its_seed_agg_plots_finds_the_seed_metrics(tmp_path, task):
    root = tmp_path / "evaluation_cache"
    for seed in (0, 1):
        synthetic_cache(root / task / "trial_4" / f"seed_{seed}" / "update_100", task, seed, 100)
    out = tmp_path / "eval_metrics.csv"
    sm.main(
        ["--cache_dir", str(root), "--task", task, "--out", str(out), "--results", str(tmp_path / "none.csv")]
    )
    header = out.read_text().splitlines()[0].split(",")
    assert "r_None_lpc_entropy" in header and not any("_all_" in c or c.endswith("_all") for c in header)
    records = its_from_csv_records(out, task)
    assert len(records) == 2 * 3 and all(r["phase"] == "None" and np.isfinite(r["r"]) for r in records)
    # ours stays available: --phase_system unlock_phase writes the door phases
    sm.main(["--cache_dir", str(root), "--task", task, "--out", str(out), "--phase_system", "unlock_phase"])
    assert "r_pre_unlock_lpc_entropy" in out.read_text().splitlines()[0]


def test_batch_eval_takes_its_final_only_spelling(tmp_path, capsys):
    for spelling in ("--final-only", "--final_only"):
        with pytest.raises(SystemExit):
            batch_eval.main(["--checkpoint_dir", str(tmp_path / "none"), spelling])
        err = capsys.readouterr().err
        assert "no checkpoints" in err and "unrecognized" not in err
