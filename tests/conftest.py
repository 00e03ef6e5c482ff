"""Shared fixtures: a tiny DistilBERT, the tiny preset and one tiny run shared by the modules."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mop.language import BABYAI_VOCAB


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> str:
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_distilbert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *BABYAI_VOCAB[2:]]
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n")
    # Positional path: the vocab file in transformers 4.x and 5.x alike.
    tokenizer = transformers.DistilBertTokenizerFast(str(vocab_file))
    assert tokenizer.unk_token_id not in tokenizer("go to the red ball, then open a door")["input_ids"]
    config = transformers.DistilBertConfig(
        vocab_size=len(words),
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.DistilBertModel(config)
    tokenizer.save_pretrained(str(path))
    model.save_pretrained(str(path))
    return str(path)


# ----------------------------------------------------------------------------- tiers

# Fixtures that train or evaluate for real: a test that uses one is tier 2 (marked slow), so
# `pytest -m "not slow and not browser"` is the seconds-long tier 1.
TIER2_FIXTURES = {"tiny_run", "trained", "project", "caches", "mop", "gru", "volumes", "tiny_distilbert"}


def pytest_collection_modifyitems(config, items):
    no_cuda = None if torch.cuda.is_available() else pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if TIER2_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if no_cuda is not None and item.get_closest_marker("gpu") is not None:
            item.add_marker(no_cuda)


# `gpu` tests need torch to see a CUDA device; elsewhere they are skipped, with this reason.
NO_CUDA = f"no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda}): a gpu test"


# ----------------------------------------------------------------------------- the tiny preset

ROOT = Path(__file__).resolve().parent.parent
TINY_PRESET = ROOT / "configs" / "tiny.yaml"
# a tqdm bar's line ("evaluations:  50%|#####     | 1/2 [00:01<...]"): progress, not an error line
BAR_LINE = re.compile(r"^\S[^|]*:\s+\d+%\|.*\|\s*\d+/\d+ \[")


def stderr_lines(err: str) -> list[str]:
    """The non-empty lines of a captured stderr, a progress bar's redraws left out (a bar that had
    started before a bad input surfaced, as batch_eval's does when a checkpoint's turn comes)."""
    return [
        line for line in err.replace("\r", "\n").splitlines() if line.strip() and not BAR_LINE.match(line)
    ]


def interruptible() -> None:
    """Popen's preexec_fn for a program a test interrupts with SIGINT: Ctrl-C's default action in
    the child. A shell that starts pytest in the background without job control (`cmd &` in a
    script) hands every child SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    the test would measure how it was started, not the program."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_config(checkpoint_dir, **overrides):
    """configs/tiny.yaml (seconds to train) with a checkpoint folder and any overrides."""
    from mop.experiment import load_config

    return load_config(TINY_PRESET, {"checkpoint_dir": str(checkpoint_dir), **overrides})


def tiny_cli(monkeypatch, *args):
    """train_mop.py's command line over configs/tiny.yaml, in this process: its exit code (None:
    it returned, trained to the end or stopped at its gate)."""
    import sys

    import train_mop

    monkeypatch.setattr(sys, "argv", ["train_mop.py", "--config", str(TINY_PRESET), *args])
    try:
        train_mop.cli()
    except SystemExit as e:
        return e.code
    return None


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny MoP run trained for real, batch-evaluated and cached, shared by every test module
    that only reads it (tier 2): checkpoints/<task>/trial_0/checkpoint_{3,final}.pt under `root`,
    evaluation_results.csv and evaluation_cache/ beside them."""
    import batch_eval
    import train_mop

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config(root / "checkpoints")
    summary = train_mop.main(cfg, progress=False)
    results, cache = root / "evaluation_results.csv", root / "evaluation_cache"
    batch_eval.main(
        [
            "--checkpoint_dir",
            str(root / "checkpoints"),
            "--num_episodes",
            "6",
            "--results_path",
            str(results),
            "--cache_dir",
            str(cache),
        ]
    )
    return SimpleNamespace(
        root=root,
        config=cfg,
        run_dir=Path(summary["run_dir"]),
        checkpoints=[Path(p) for p in summary["checkpoints"]],
        results=results,
        cache_root=cache,
    )


def fake_episode(length: int, seed: int, mission: str = "go to the red ball"):
    """A replay_buffer.StoredEpisode of random (but seed-fixed) steps, for buffer tests."""
    import numpy as np

    from mop.replay_buffer import StoredEpisode

    rng = np.random.default_rng(seed)
    return StoredEpisode(
        rng.integers(0, 11, (length, 7, 7, 3)).astype(np.uint8),
        rng.integers(0, 4, length).astype(np.uint8),
        rng.integers(0, 2, length).astype(np.uint8),
        rng.integers(0, 7, length).astype(np.int8),
        mission,
        seed,
    )


def runs_off(fig, slack: float = 1.0) -> list:
    """The panels of a Matplotlib figure whose drawn labels, titles or ticks reach more than `slack`
    pixels past its edge (saved PNGs are not cropped to their contents, so those would be cut off)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = [(ax, ax.get_tightbbox(canvas.get_renderer())) for ax in fig.axes if ax.get_visible()]
    w, h = fig.bbox.width + slack, fig.bbox.height + slack
    return [
        ax for ax, b in boxes if b is not None and (b.x0 < -slack or b.y0 < -slack or b.x1 > w or b.y1 > h)
    ]


def sequence_against_steps(policy, obs_dim: int, lang_dim: int, T: int = 9, B: int = 3):
    """A T-step unroll of B envs (random inputs, env 1's episode ending at step 4) through
    forward_sequence, checked equal to T calls of step with the memory reset where an episode
    ended; returns the sequence's output (its logits keep their graph, for a backward)."""
    obs, lang = torch.randn(T, B, obs_dim), torch.randn(T, B, lang_dim)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[4, 1] = True
    seq = policy.forward_sequence(obs, lang, policy.init_memory(B), done)
    memory, logits = policy.init_memory(B), []
    for t in range(T):
        out = policy.step(obs[t], lang[t], memory)
        logits.append(out.logits)
        memory = out.memory * (~done[t]).float().unsqueeze(-1)
    torch.testing.assert_close(seq.logits, torch.stack(logits), atol=1e-5, rtol=1e-5)
    return seq
