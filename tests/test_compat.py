"""Users of the earlier system: its checkpoints load, its CSVs merge, its spellings parse, and the
README's commands need only requirements.txt (issue 13, items 1, 3, 5, 6).

The earlier system's checkpoints are built here exactly as its train_mop.py wrote them (reference
§1.7, §1.8, §1.11): its module names (`moe_layers.K.router.fc`, `...experts.J.projection`), its
config keys only, `num_actions` as gymnasium's numpy.int64, top-level `update` and
`lang_proj_state_dict`, no format_version; its network is re-implemented below from §1.11.
"""

import ast
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import batch_eval
import eval_mop
from mixture_of_experts import build_policy
from mop import experiment
from mop.experiment import (
    CheckpointError,
    ConfigError,
    build_arg_parser,
    config_from_args,
    load_checkpoint,
    load_config,
    load_policy,
)
from mop.results import LEGACY_COLUMNS, merge_results

ROOT = Path(__file__).resolve().parent.parent
TASK = "BabyAI-GoToRedBallGrey-v0"

# ----------------------------------------------------------------------------- the earlier network


class EarlierExpert(nn.Module):
    def __init__(self, dim: int, size: int):
        super().__init__()
        self.size = size
        if size:
            self.gru = nn.GRU(dim, size, batch_first=True)
            self.projection = nn.Linear(size, dim)

    def forward(self, x, h):  # x (B, 1, dim), h (1, B, size)
        if not self.size:
            return x.squeeze(1), h
        out, h = self.gru(x, h)
        return self.projection(out.squeeze(1)), h


class EarlierRouter(nn.Module):
    def __init__(self, dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_experts)

    def forward(self, x, h):
        out, h = self.gru(x, h)
        return F.softmax(self.fc(out.squeeze(1)), dim=-1), h


class EarlierLayer(nn.Module):
    def __init__(self, dim: int, sizes: list[int], router_hidden: int):
        super().__init__()
        self.router = EarlierRouter(dim, router_hidden, len(sizes))
        self.experts = nn.ModuleList(EarlierExpert(dim, s) for s in sizes)


class EarlierPolicy(nn.Module):
    """§1.11: Linear(obs ⊕ lang) -> per layer sum_j softmax-router_j * expert_j(x) -> head."""

    def __init__(self, input_dim, intermediate_dim, sizes, router_hidden, num_actions, lang_dim):
        super().__init__()
        self.sizes, self.router_hidden = sizes, router_hidden
        self.input_projection = nn.Linear(input_dim + lang_dim, intermediate_dim)
        self.moe_layers = nn.ModuleList(EarlierLayer(intermediate_dim, s, router_hidden) for s in sizes)
        self.head = nn.Linear(intermediate_dim, num_actions)

    def init_hidden(self, batch: int):
        return [
            (torch.zeros(1, batch, self.router_hidden), [torch.zeros(1, batch, s) for s in sizes])
            for sizes in self.sizes
        ]

    def forward(self, obs, lang, h):
        current = self.input_projection(torch.cat([obs, lang], dim=1))
        new_h, weights = [], []
        for layer, (h_router, h_experts) in zip(self.moe_layers, h):
            x = current.unsqueeze(1)
            w, h_router = layer.router(x, h_router)
            outs = [expert(x, he) for expert, he in zip(layer.experts, h_experts)]
            current = (torch.stack([o for o, _ in outs], dim=1) * w.unsqueeze(-1)).sum(dim=1)
            new_h.append((h_router, [he for _, he in outs]))
            weights.append(w)
        return self.head(current), new_h, weights


def earlier_config(with_architecture: bool, lang_dim: int = 8, **architecture) -> dict:
    """The config dict its train_mop.py saved: its config.yaml keys, its flags, num_actions and update."""
    config = {
        "task_id": TASK,
        "trial": 0,
        "num_envs": 16,
        "unroll_len": 40,
        "num_updates": 5000,
        "lr": 0.0005,
        "log_interval": 20,
        "wandb_project": "babyai-gru",
        "input_dim": 152,
        "lang_dim": lang_dim,
        "hidden_size": 64,
        "lpc_alpha": 0.0001,
        "normalize_lpc": True,
        "max_steps": None,
        "seed": 0,
        "num_actions": np.int64(7),  # gymnasium's Discrete.n
        "update": 250,
    }
    if with_architecture:
        config.update(architecture)
    return config


def save_earlier_checkpoint(path: Path, policy: nn.Module, config: dict, lang_proj: nn.Linear) -> Path:
    """torch.save exactly as its train_mop.py did (no format_version, its key names)."""
    optimizer = torch.optim.Adam(policy.parameters(), lr=config["lr"])
    policy.zero_grad()
    policy.head.bias.sum().backward()
    optimizer.step()  # a real Adam state, as in its checkpoints
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "policy_state_dict": policy.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "config": config,
            "update": config["update"],
            "lang_proj_state_dict": lang_proj.state_dict(),
        },
        path,
    )
    return path


def as_numpy1_pickle(path: Path) -> None:
    """Rewrite a checkpoint as numpy 1.x pickles it: numpy.core.multiarray.scalar."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info, data)
    path.write_bytes(out.getvalue())


SMALL = {"expert_hidden_sizes": [[0, 8, 16], [0, 8, 16]], "intermediate_dim": 24, "router_hidden_size": 12}
EARLIER_DEFAULTS = {"expert_hidden_sizes": [[32, 64, 128]], "intermediate_dim": 256, "router_hidden_size": 64}


def make_earlier(tmp_path: Path, with_architecture: bool, name: str = "checkpoint_250.pt", dim: int = 32):
    """(path, EarlierPolicy, lang_proj) of a fresh earlier-system checkpoint on TASK."""
    torch.manual_seed(1)
    arch = SMALL if with_architecture else EARLIER_DEFAULTS
    policy = EarlierPolicy(
        152, arch["intermediate_dim"], arch["expert_hidden_sizes"], arch["router_hidden_size"], 7, 8
    )
    lang_proj = nn.Linear(dim, 8)  # its frozen random 768 -> lang_dim projection (dim: the backbone's)
    config = earlier_config(with_architecture, **SMALL)
    path = save_earlier_checkpoint(tmp_path / name, policy, config, lang_proj)
    return path, policy, lang_proj


# ----------------------------------------------------------------------------- tier 1: loading


@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2-pickle", "numpy1-pickle"])
def test_an_earlier_checkpoint_loads_and_is_upgraded(tmp_path, numpy1):
    path, earlier, lang_proj = make_earlier(tmp_path, with_architecture=True)
    if numpy1:
        as_numpy1_pickle(path)
    with pytest.raises(Exception, match="numpy"):  # what plain weights_only refuses
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    assert type(config["num_actions"]) is int and config["num_actions"] == 7
    assert (config["update"], ckpt["update"], config["seed"]) == (250, 250, 0)
    assert (config["obs_encoding"], config["input_encoder"], config["lang_encoder"]) == (
        "raw",
        "linear",
        "distilbert",
    )
    assert config["expert_hidden_sizes"] == SMALL["expert_hidden_sizes"] and config["intermediate_dim"] == 24
    assert ckpt["format_version"] == experiment.CHECKPOINT_FORMAT
    torch.testing.assert_close(ckpt["encoder_state"]["lang_proj_state_dict"]["weight"], lang_proj.weight)
    ours = build_policy(config)
    assert set(ckpt["policy_state_dict"]) == set(ours.state_dict())  # strict names
    assert set(earlier.state_dict()) != set(ours.state_dict())  # (the names did differ)


def test_an_earlier_config_without_architecture_gets_its_defaults(tmp_path):
    path, _, _ = make_earlier(tmp_path, with_architecture=False)
    config = load_checkpoint(path)["config"]
    assert config["expert_hidden_sizes"] == [32, 64, 128]  # one layer (its default)
    assert (config["intermediate_dim"], config["router_hidden_size"], config["lang_dim"]) == (256, 64, 8)
    policy = build_policy(config)
    policy.load_state_dict(load_checkpoint(path)["policy_state_dict"])


@pytest.mark.parametrize("with_architecture", [True, False])
def test_earlier_weights_give_the_same_logits_and_routing(tmp_path, with_architecture):
    path, earlier, _ = make_earlier(tmp_path, with_architecture)
    ckpt = load_checkpoint(path)
    ours = build_policy(ckpt["config"])
    ours.load_state_dict(ckpt["policy_state_dict"])
    earlier.eval(), ours.eval()
    gen = torch.Generator().manual_seed(0)
    batch = 5
    h, memory = earlier.init_hidden(batch), ours.init_memory(batch)
    with torch.no_grad():
        for _ in range(6):  # several steps: the recurrent memory must agree too
            obs = torch.randint(0, 11, (batch, 152), generator=gen).float()
            lang = torch.randn(batch, 8, generator=gen)
            logits, h, weights = earlier(obs, lang, h)
            out = ours.step(obs, lang, memory)
            memory = out.memory
            assert (out.logits - logits).abs().max() < 1e-5
            for w_ours, w_earlier in zip(out.router_weights, weights, strict=True):
                assert (w_ours - w_earlier).abs().max() < 1e-5


def test_only_the_numpy_int64_scalar_is_let_through(tmp_path):
    """A numpy array (another global) in a checkpoint is still refused, with one line."""
    path, earlier, lang_proj = make_earlier(tmp_path, with_architecture=True)
    config = earlier_config(True, **SMALL) | {"extra": np.arange(3)}
    save_earlier_checkpoint(path, earlier, config, lang_proj)
    with pytest.raises(CheckpointError, match=r"unreadable or corrupt \(UnpicklingError\)$"):
        load_checkpoint(path)
    config = earlier_config(True, **SMALL) | {"extra": np.float32(0.5)}
    save_earlier_checkpoint(path, earlier, config, lang_proj)
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        load_checkpoint(path)


class Payload:
    """A pickle that runs os.mkdir(marker) when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    path = tmp_path / "checkpoint_final.pt"
    torch.save({"policy_state_dict": {}, "config": {"task_id": Payload(tmp_path / "pwned")}}, path)
    with pytest.raises(CheckpointError, match="unreadable or corrupt") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()
    # The payload is live: an unsafe load would have run it (so the test above can fail).
    torch.save({"config": Payload(tmp_path / "live")}, tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert (tmp_path / "live").is_dir()


# ----------------------------------------------------------------------------- tier 1: the CSV


def earlier_csv(path: Path, with_lang_dim: bool) -> pd.DataFrame:
    """A results CSV as its batch_eval wrote it (§4): its 20 columns in its order, pandas to_csv;
    its oldest files have no lang_dim."""
    rows = [
        {
            "checkpoint_path": f"modal_checkpoints/{TASK}/trial_0/checkpoint_250.pt",
            "seed": None,  # legacy layout: no seed folder
            "update": 250,
        },
        {
            "checkpoint_path": f"modal_checkpoints/{TASK}/trial_0/seed_0/checkpoint_5000.pt",
            "seed": 0,
            "update": 5000,
        },
    ]
    for row in rows:
        row.update(
            task_id=TASK,
            trial=0,
            num_episodes=100,
            success_rate=0.93,
            path_ratio=1.2345678901234,
            mean_lpc=1234.5,
            bot_plan_failures=0,
            num_updates=5000,
            unroll_len=40,
            lr=0.0005,
            lpc_alpha=1e-06,
            expert_hidden_sizes="[[0, 16, 32], [0, 16, 32], [0, 16, 32]]",
            intermediate_dim=64,
            router_hidden_size=64,
            max_steps=None,
            lang_dim=32,
            evaluated_at="2025-03-01T12:00:00.123456",
        )
    columns = list(LEGACY_COLUMNS)
    if not with_lang_dim:
        columns.remove("lang_dim")
    df = pd.DataFrame(rows)[columns]
    df.to_csv(path, index=False)
    return df


@pytest.mark.parametrize("with_lang_dim", [True, False])
def test_an_earlier_csv_merges_and_round_trips(tmp_path, with_lang_dim):
    path = tmp_path / "evaluation_results.csv"
    original = earlier_csv(path, with_lang_dim)
    assert LEGACY_COLUMNS[3:5] == ["seed", "update"] and len(LEGACY_COLUMNS) == 20
    new = {
        "checkpoint_path": f"checkpoints/{TASK}/trial_1/seed_3/checkpoint_final.pt",
        "task_id": TASK,
        "eval_task_id": TASK,
        "knockout": "none",
        "trial": 1,
        "seed": 3,
        "update": 40,
        "lang_dim": 32,
        "success_rate": 0.5,
    }
    merge_results(path, [new])
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(text.columns[:20]) == LEGACY_COLUMNS
    earlier = text[text["checkpoint_path"].str.startswith("modal_checkpoints/")].set_index("checkpoint_path")
    seeded = earlier.loc[original["checkpoint_path"][1]]
    assert (seeded["seed"], seeded["update"], seeded["trial"]) == ("0", "5000", "0")  # not 0.0
    assert earlier.loc[original["checkpoint_path"][0], "seed"] == ""
    assert set(earlier["lang_dim"]) == ({"32"} if with_lang_dim else {"128"})  # as its loader filled
    ours = text[text["checkpoint_path"] == new["checkpoint_path"]].iloc[0]
    assert (ours["seed"], ours["update"]) == ("3", "40")
    # Its values come back unchanged (read as it reads them), and a second merge changes nothing.
    back = pd.read_csv(path).set_index("checkpoint_path").loc[original["checkpoint_path"]]
    for col in original.columns.drop(["checkpoint_path", "seed"]):
        assert back[col].tolist() == original[col].tolist() or back[col].isna().all(), col
    before = path.read_bytes()
    merge_results(path, [])
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- tier 1: spellings


def test_the_integration_guides_yaml_spellings(tmp_path):
    (tmp_path / "guide.yaml").write_text(
        'mop_layers: ["32,64,128", "64,128,256"]\nmop_intermediate_dim: 256\nmop_router_dim: 64\n'
    )
    cfg = load_config(tmp_path / "guide.yaml")
    assert cfg.expert_hidden_sizes == [[32, 64, 128], [64, 128, 256]]
    assert (cfg.intermediate_dim, cfg.router_hidden_size) == (256, 64)
    (tmp_path / "both.yaml").write_text("mop_router_dim: 64\nrouter_hidden_size: 32\n")
    with pytest.raises(ConfigError, match="'mop_router_dim' and 'router_hidden_size'"):
        load_config(tmp_path / "both.yaml")
    (tmp_path / "bad.yaml").write_text('mop_layers: ["32,x"]\n')
    with pytest.raises(ConfigError, match="expert_hidden_sizes"):
        load_config(tmp_path / "bad.yaml")


def test_the_integration_guides_flags():
    parser = build_arg_parser("x")
    args = parser.parse_args(
        ["--mop_layers", "16,32;32,64", "--mop_intermediate_dim", "96", "--mop_router_dim", "16"]
    )
    cfg, _ = config_from_args(args)
    assert (cfg.expert_hidden_sizes, cfg.intermediate_dim, cfg.router_hidden_size) == (
        [[16, 32], [32, 64]],
        96,
        16,
    )
    args = parser.parse_args(["--mop_intermediate_dim", "96", "--intermediate_dim", "32"])
    with pytest.raises(ConfigError, match="'mop_intermediate_dim' and 'intermediate_dim'"):
        config_from_args(args)
    help_text = parser.format_help()
    assert "--mop_intermediate_dim" in help_text and "--mop_router_dim" in help_text


# ----------------------------------------------------------------------------- tier 1: requirements

# Import name -> distribution, where they differ.
DISTRIBUTIONS = {"yaml": "pyyaml", "PIL": "pillow"}
# Imported only when asked for, behind an ImportError message (wandb_project, Modal's own CLI).
OPTIONAL = {"wandb", "modal"}


def _imports(path: Path) -> set[str]:
    """Top-level names imported anywhere in a file, except inside `try: ... except ImportError`."""
    tree = ast.parse(path.read_text())
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
            if node.module == "mop":  # `from mop import runs`: the package's module runs.py
                names |= {f"mop.{a.name}" for a in node.names}
            elif node.module.startswith("mop."):
                names.add(node.module)
    return names


def test_every_readme_command_needs_only_requirements_txt():
    readme = (ROOT / "README.md").read_text()
    scripts = set(re.findall(r"(?:python|marimo run|marimo export html) ([\w/]+\.py)", readme))
    assert {"routing_viz.py", "eval_mop.py", "batch_eval.py", "train_mop.py"} <= scripts
    scripts -= {"modal_app.py"}  # `modal run`: the README's Modal section installs modal itself
    required = {
        re.split(r"[=<>\[ ]", line.strip())[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    }
    assert "marimo" in required
    seen, todo, missing = set(), [ROOT / s for s in scripts], {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            if name == "mop":  # the library package itself; its modules are followed by name
                continue
            if (ROOT / f"{name.replace('.', '/')}.py").exists():
                todo.append(ROOT / f"{name.replace('.', '/')}.py")
            elif (path.parent / f"{name}.py").exists():  # a script's sibling (its sys.path[0])
                todo.append(path.parent / f"{name}.py")
            elif name not in sys.stdlib_module_names and name not in OPTIONAL:
                if DISTRIBUTIONS.get(name, name).lower() not in required:
                    missing[name] = path.name
    assert missing == {}, f"imported by README commands but not in requirements.txt: {missing}"
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev and "marimo" not in dev  # one pin, in requirements.txt


# ----------------------------------------------------------------------------- tier 2: end to end


def run_cli(script: str, *args: str, cwd: Path, env: dict | None = None):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def earlier_run(tmp_path):
    """<tmp>/modal_checkpoints/<TASK>/trial_0/seed_0/checkpoint_{250,final}.pt as it wrote them
    (the final one an identical alias), with a 32-wide projection for the tiny DistilBERT."""
    run = tmp_path / "modal_checkpoints" / TASK / "trial_0" / "seed_0"
    path, earlier, lang_proj = make_earlier(run, with_architecture=True)
    (run / "checkpoint_final.pt").write_bytes(path.read_bytes())
    return path, earlier, lang_proj


def test_an_earlier_checkpoint_evaluates(tiny_distilbert, earlier_run, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path, earlier, lang_proj = earlier_run
    _, encoder, _ = load_policy(path, distilbert_path=tiny_distilbert)
    # Its mission embedding: lang_proj(DistilBERT [CLS]) with the saved projection.
    tokenizer, bert = (
        AutoTokenizer.from_pretrained(tiny_distilbert),
        AutoModel.from_pretrained(tiny_distilbert),
    )
    mission = "go to the red ball"
    with torch.no_grad():
        cls = bert(**tokenizer(mission, return_tensors="pt")).last_hidden_state[:, 0]
        torch.testing.assert_close(encoder([mission]), lang_proj(cls))
    # The CLI: without the weights, one line naming the flag; with them, an evaluation.
    offline = {"HF_HOME": str(tmp_path / "empty_hf"), "HF_HUB_OFFLINE": "1"}
    result = run_cli(
        "eval_mop.py", "--checkpoint", str(path), "--num_episodes", "2", cwd=tmp_path, env=offline
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--distilbert_path" in result.stderr.strip().splitlines()[-1]
    args = ["--checkpoint", str(path), "--num_episodes", "3", "--num_envs", "2"]
    result = run_cli("eval_mop.py", *args, "--distilbert_path", tiny_distilbert, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 episodes" in result.stdout and "success_rate" in result.stdout
    direct = eval_mop.evaluate(
        path, eval_mop.EvalOptions(num_episodes=3, num_envs=2, record=False, distilbert_path=tiny_distilbert)
    )
    assert f"success_rate {direct.metrics['success_rate']:.3f}" in result.stdout


def test_batch_eval_evaluates_earlier_checkpoints_once(tiny_distilbert, earlier_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "evaluation_results.csv"
    earlier_csv(results, with_lang_dim=False)  # its CSV, to merge into
    common = ["--checkpoint_dir", "modal_checkpoints", "--num_episodes", "3", "--num_envs", "2"]
    out = batch_eval.main([*common, "--distilbert_path", tiny_distilbert])
    assert out["errors"] == [] and len(out["evaluated"]) == 1  # final is checkpoint_250's alias
    text = pd.read_csv(results, dtype=str, keep_default_na=False)
    assert list(text.columns[:20]) == LEGACY_COLUMNS and len(text) == 3
    row = text[text["checkpoint_path"].str.endswith("seed_0/checkpoint_250.pt")].iloc[0]  # its skip name
    assert (row["trial"], row["seed"], row["update"], row["lang_dim"]) == ("0", "0", "250", "8")
    assert row["expert_hidden_sizes"] == "[[0, 8, 16], [0, 8, 16]]" and row["num_episodes"] == "3"
    assert (tmp_path / "evaluation_cache" / TASK / "trial_0" / "seed_0").is_dir()
