"""Tests for language.py: BabyAI vocabulary, tokenizer, BoW and DistilBERT mission encoders (offline, CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* environments)
import pytest
import torch
from minigrid.core.constants import COLOR_NAMES
from minigrid.envs.babyai.core.verifier import LOC_NAMES, OBJ_TYPES

from mop import language
from mop.language import (
    BABYAI_VOCAB,
    PAD_ID,
    UNK_ID,
    BagOfWordsEncoder,
    DistilBertEncoder,
    MissionEncoderError,
    build_mission_encoder,
    tokenize,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Levels chosen to exercise every mission grammar: single verbs, locations (Loc),
# PutNext, door colours, seq/after/and clauses (GoToSeq, Synth*, BossLevel).
LEVELS = [
    "BabyAI-GoToLocal-v0",
    "BabyAI-GoToObj-v0",
    "BabyAI-GoToDoor-v0",
    "BabyAI-GoToSeq-v0",
    "BabyAI-PutNextLocal-v0",
    "BabyAI-PutNextS7N4Carrying-v0",
    "BabyAI-Open-v0",
    "BabyAI-OpenDoorLoc-v0",
    "BabyAI-OpenDoorsOrderN4-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-PickupDist-v0",
    "BabyAI-UnlockPickup-v0",
    "BabyAI-KeyCorridorS3R1-v0",
    "BabyAI-MoveTwoAcrossS8N9-v0",
    "BabyAI-SynthLoc-v0",
    "BabyAI-SynthSeq-v0",
    "BabyAI-MiniBossLevel-v0",
    "BabyAI-BossLevel-v0",
]
SEEDS = [0, 1, 2, 3, 4]


def _sample_missions() -> list[str]:
    missions = []
    for level in LEVELS:
        env = gym.make(level)
        try:
            for seed in SEEDS:
                env.reset(seed=seed)
                missions.append(env.unwrapped.mission)
        finally:
            env.close()
    return missions


@pytest.fixture(scope="module")
def missions() -> list[str]:
    return _sample_missions()


# --- vocabulary and tokenizer -------------------------------------------------------


def test_vocab_layout() -> None:
    assert BABYAI_VOCAB[PAD_ID] == "<pad>"
    assert BABYAI_VOCAB[UNK_ID] == "<unk>"
    assert len(set(BABYAI_VOCAB)) == len(BABYAI_VOCAB)
    # The verifier's building blocks: a new colour/type/location in minigrid would show up here.
    for word in [*COLOR_NAMES, *OBJ_TYPES, *LOC_NAMES]:
        assert word in BABYAI_VOCAB


def test_vocab_covers_sampled_missions(missions: list[str]) -> None:
    assert len(missions) == len(LEVELS) * len(SEEDS)
    unknown = {}
    for mission in missions:
        words = mission.lower().replace(",", " ").split()
        missing = [w for w in words if w not in BABYAI_VOCAB]
        if missing:
            unknown[mission] = missing
        assert UNK_ID not in tokenize(mission), mission
    assert not unknown
    # The sample really exercised the compound grammar, not only "go to the X".
    joined = " ".join(missions)
    for word in ("then", "after", "and", "put", "next", "pick", "open"):
        assert f" {word} " in f" {joined} ", word


def test_tokenize_lowercases_strips_punctuation_and_maps_unknown() -> None:
    ids = tokenize("Go to the RED ball, then open the door.")
    assert [BABYAI_VOCAB[i] for i in ids] == [
        "go",
        "to",
        "the",
        "red",
        "ball",
        "then",
        "open",
        "the",
        "door",
    ]
    ids = tokenize("go to the zebra")
    assert ids[-1] == UNK_ID
    assert [BABYAI_VOCAB[i] for i in ids[:3]] == ["go", "to", "the"]
    assert tokenize("ball,then") == [
        BABYAI_VOCAB.index("ball"),
        BABYAI_VOCAB.index("then"),
    ]
    assert tokenize("") == []
    assert tokenize("  ,  ") == []


def test_tokenize_custom_vocab_and_validation() -> None:
    vocab = ("<pad>", "<unk>", "hello")
    assert tokenize("Hello world", vocab) == [2, UNK_ID]
    with pytest.raises(ValueError, match="<pad>"):
        tokenize("hello", ("hello", "<pad>", "<unk>"))


# --- bag of words ---------------------------------------------------------------------


def test_bow_shapes_and_interface(missions: list[str]) -> None:
    enc = BagOfWordsEncoder(lang_dim=16)
    assert enc.kind == "bow" and enc.trainable is True and enc.lang_dim == 16
    out = enc(missions)
    assert out.shape == (len(missions), 16)
    assert out.dtype == torch.float32
    assert enc([]).shape == (0, 16)
    # Empty mission -> empty bag -> zero vector (not NaN).
    assert torch.equal(enc([""]), torch.zeros(1, 16))


def test_bow_is_mean_of_word_embeddings() -> None:
    enc = BagOfWordsEncoder(lang_dim=8)
    ids = tokenize("go to the red ball")
    expected = enc.embedding.weight[ids].mean(0)
    torch.testing.assert_close(enc(["go to the red ball"])[0], expected)
    # Bag of words: word order does not matter.
    torch.testing.assert_close(enc(["ball red the to go"]), enc(["go to the red ball"]))


def test_bow_tokenizes_each_distinct_mission_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = language.tokenize

    def counting(mission: str, vocab=BABYAI_VOCAB) -> list[int]:
        calls.append(mission)
        return real(mission, vocab)

    monkeypatch.setattr(language, "tokenize", counting)
    enc = BagOfWordsEncoder(lang_dim=4)
    a, b = "go to the red ball", "open the door"
    first = enc([a, b, a, a])
    second = enc([b, a])
    assert sorted(calls) == sorted([a, b])
    torch.testing.assert_close(second, first[[1, 0]])


def test_bow_gradients_reach_embedding() -> None:
    enc = BagOfWordsEncoder(lang_dim=6)
    enc(["go to the red ball", "go to the red ball"])  # fill the cache first
    out = enc(["go to the red ball", "open the door"])
    assert out.requires_grad
    out.pow(2).sum().backward()
    grad = enc.embedding.weight.grad
    assert grad is not None
    used = set(tokenize("go to the red ball")) | set(tokenize("open the door"))
    for i in range(len(BABYAI_VOCAB)):
        if i in used:
            assert grad[i].abs().sum() > 0, BABYAI_VOCAB[i]
        else:
            assert torch.all(grad[i] == 0), BABYAI_VOCAB[i]
    assert torch.all(enc.embedding.weight[PAD_ID] == 0)


def test_bow_state_round_trip(tmp_path: Path, missions: list[str]) -> None:
    enc = BagOfWordsEncoder(lang_dim=12)
    path = tmp_path / "enc.pt"
    torch.save(enc.encoder_state(), path)
    state = torch.load(path, weights_only=True)
    assert state["kind"] == "bow" and state["vocab"] == list(BABYAI_VOCAB)
    rebuilt = build_mission_encoder("bow", 12, state=state)
    assert isinstance(rebuilt, BagOfWordsEncoder)
    assert torch.equal(rebuilt(missions), enc(missions))
    with pytest.raises(ValueError, match="lang_dim"):
        build_mission_encoder("bow", 13, state=state)


def test_build_unknown_kind() -> None:
    with pytest.raises(ValueError) as info:
        build_mission_encoder("lstm", 8)  # "gru" is a kind now
    assert "'lstm'" in str(info.value)
    assert "bow" in str(info.value) and "distilbert" in str(info.value)


def test_module_imports_and_reports_without_transformers() -> None:
    # A fresh interpreter where `import transformers` fails: BoW works, DistilBERT says what to install.
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from mop import language\n"
        "assert language.build_mission_encoder('bow', 4)(['go to the red ball']).shape == (1, 4)\n"
        "try:\n"
        "    language.DistilBertEncoder(4)\n"
        "except language.MissionEncoderError as e:\n"
        "    assert 'pip install transformers' in str(e), e\n"
        "    print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


# --- DistilBERT (a tiny random model written to tmp_path; nothing downloaded) ---------------


def test_distilbert_shapes_and_frozen(tiny_distilbert: str, missions: list[str]) -> None:
    enc = DistilBertEncoder(lang_dim=8, model_name_or_path=tiny_distilbert)
    assert enc.kind == "distilbert" and enc.trainable is False and enc.lang_dim == 8 and enc.dim == 32
    assert all(not p.requires_grad for p in enc.parameters())
    assert all(not p.requires_grad for p in enc.backbone.parameters())
    assert not enc.backbone.training
    # Only the projection is registered: no backbone weights in a policy checkpoint.
    assert set(enc.state_dict()) == {"lang_proj.weight", "lang_proj.bias"}
    out = enc(missions)
    assert out.shape == (len(missions), 8)
    assert not out.requires_grad
    assert torch.isfinite(out).all()
    assert enc([]).shape == (0, 8)
    # Different missions give different vectors.
    two = enc(["go to the red ball", "open the blue door"])
    assert not torch.allclose(two[0], two[1])


def test_distilbert_runs_each_distinct_mission_once(tiny_distilbert: str) -> None:
    enc = DistilBertEncoder(lang_dim=8, model_name_or_path=tiny_distilbert)
    seen_batch_sizes: list[int] = []

    def count(module, args, kwargs):
        seen_batch_sizes.append(int(kwargs["input_ids"].shape[0]))

    enc.backbone.register_forward_pre_hook(count, with_kwargs=True)
    a, b, c = "go to the red ball", "open the door", "pick up a key, then go to the box"
    first = enc([a, b, a])
    assert seen_batch_sizes == [2]
    second = enc([b, a, b])
    assert seen_batch_sizes == [2]
    third = enc([c, a])
    assert seen_batch_sizes == [2, 1]
    torch.testing.assert_close(second, first[[1, 0, 1]])
    torch.testing.assert_close(third[1], first[0])
    # Batched (padded) encoding equals encoding alone: [CLS] is read at position 0 with right padding.
    alone = DistilBertEncoder(lang_dim=8, model_name_or_path=tiny_distilbert)
    torch.testing.assert_close(alone([c]), third[:1], atol=1e-5, rtol=1e-5)


def test_distilbert_projection_seeded_without_touching_global_rng(
    tiny_distilbert: str,
) -> None:
    rng_before = torch.get_rng_state()
    a = DistilBertEncoder(8, tiny_distilbert, generator_seed=3)
    b = DistilBertEncoder(8, tiny_distilbert, generator_seed=3)
    c = DistilBertEncoder(8, tiny_distilbert, generator_seed=4)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(a.lang_proj.weight, b.lang_proj.weight)
    assert torch.equal(a.lang_proj.bias, b.lang_proj.bias)
    assert not torch.equal(a.lang_proj.weight, c.lang_proj.weight)
    built = build_mission_encoder("distilbert", 8, distilbert_path=tiny_distilbert, seed=3)
    assert torch.equal(built.lang_proj.weight, a.lang_proj.weight)


def test_distilbert_state_round_trip(tiny_distilbert: str, tmp_path: Path, missions: list[str]) -> None:
    enc = build_mission_encoder("distilbert", 8, distilbert_path=tiny_distilbert, seed=7)
    expected = enc(missions)
    path = tmp_path / "enc.pt"
    torch.save(enc.encoder_state(), path)
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"lang_proj_state_dict", "model_name_or_path"}
    assert state["model_name_or_path"] == tiny_distilbert
    # A different seed proves the projection comes from the state, not from re-seeding.
    rebuilt = build_mission_encoder("distilbert", 8, distilbert_path=tiny_distilbert, state=state, seed=99)
    assert torch.equal(rebuilt(missions), expected)
    assert torch.equal(DistilBertEncoder.from_state(state)(missions), expected)
    with pytest.raises(ValueError, match="lang_proj"):
        build_mission_encoder("distilbert", 9, distilbert_path=tiny_distilbert, state=state)
    with pytest.raises(ValueError, match="kind"):
        build_mission_encoder("bow", 8, state=state)


def test_distilbert_missing_path_raises_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(MissionEncoderError) as info:
        DistilBertEncoder(lang_dim=8, model_name_or_path=missing)
    message = str(info.value)
    assert missing in message
    assert "\n" not in message
    with pytest.raises(MissionEncoderError, match="no_such_model"):
        build_mission_encoder("distilbert", 8, distilbert_path=missing)
