"""Mission (instruction string) encoders for BabyAI.

A BabyAI mission such as ``"pick up the red ball, then open a door on your left"``
is turned into one fixed-size vector per mission, which the policy concatenates to
its observation at every step. Two encoders share one interface (``kind``,
``lang_dim``, ``trainable``, ``forward(missions)``, ``encoder_state()``,
``load_encoder_state(state)``):

- ``BagOfWordsEncoder`` ("bow"): a learned mean of word embeddings over the closed
  BabyAI vocabulary ``BABYAI_VOCAB``. Trained with the policy; no extra packages.
- ``DistilBertEncoder`` ("distilbert"): the frozen DistilBERT [CLS] vector of the
  mission, passed through a frozen random linear projection to ``lang_dim``.
  Needs ``transformers`` and weights already on disk: nothing is downloaded.

Example: a learned encoder, trained along with the policy::

    enc = build_mission_encoder("bow", lang_dim=32)
    lang = enc(["go to the red ball", "open the door"])  # (2, 32), requires grad

Example: a frozen DistilBERT encoder, saved and rebuilt from a checkpoint::

    enc = build_mission_encoder("distilbert", lang_dim=32, distilbert_path="/data/distilbert", seed=1)
    torch.save({"encoder": enc.encoder_state()}, "ckpt.pt")
    state = torch.load("ckpt.pt", weights_only=True)["encoder"]
    enc2 = build_mission_encoder("distilbert", 32, distilbert_path="/data/distilbert", state=state)
"""

from __future__ import annotations

import functools
import math
import pickle
import string
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1

# Every word a BabyAI mission can contain (minigrid 3.2.0). Missions are produced
# only by the `surface` methods in minigrid/envs/babyai/core/verifier.py:
#   ObjDesc:      "the"/"a" [colour] (type | "object") ["in front of you" | "behind you" | "on your left/right"]
#   OpenInstr:    "open " + desc          GoToInstr:   "go to " + desc
#   PickupInstr:  "pick up " + desc       PutNextInstr: "put " + desc + " next to " + desc
#   BeforeInstr:  a + ", then " + b       AfterInstr:  a + " after you " + b       AndInstr: a + " and " + b
# Colours are minigrid.core.constants.COLOR_NAMES, types verifier.OBJ_TYPES, locations
# verifier.LOC_NAMES. The order below is fixed forever: a saved BoW embedding's rows
# are indexed by it, so new words may only ever be appended.
BABYAI_VOCAB: tuple[str, ...] = (
    PAD,
    UNK,
    # verbs and their particles
    "go",
    "to",
    "open",
    "pick",
    "up",
    "put",
    "next",
    # determiners
    "the",
    "a",
    # colours
    "red",
    "green",
    "blue",
    "purple",
    "yellow",
    "grey",
    # object types ("object" when the description has no type)
    "box",
    "ball",
    "key",
    "door",
    "object",
    # locations relative to the agent's starting pose
    "in",
    "front",
    "of",
    "you",
    "behind",
    "on",
    "your",
    "left",
    "right",
    # sequencing
    "then",
    "after",
    "and",
)

# Punctuation becomes a separator (not deleted) so that "ball,then" still gives two words.
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation})


class MissionEncoderError(RuntimeError):
    """A mission encoder cannot be built (missing package or weights); the message says how to fix it."""


@functools.lru_cache(maxsize=16)
def _word_to_id(vocab: tuple[str, ...]) -> dict[str, int]:
    # Cached per vocabulary so that tokenize() does not rebuild the map on every call.
    if tuple(vocab[:2]) != (PAD, UNK):
        raise ValueError(f"vocab must start with {PAD!r}, {UNK!r}; got {tuple(vocab[:2])!r}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab has duplicate words")
    return {w: i for i, w in enumerate(vocab)}


def tokenize(mission: str, vocab: Sequence[str] = BABYAI_VOCAB) -> list[int]:
    """Word ids of `mission`: lowercased, punctuation treated as spaces, unknown words -> <unk> (1)."""
    table = _word_to_id(tuple(vocab))
    words = mission.lower().translate(_PUNCT_TO_SPACE).split()
    return [table.get(w, UNK_ID) for w in words]


class BagOfWordsEncoder(nn.Module):
    """Learned mean of word embeddings: (n missions) -> (n, lang_dim).

    Mean rather than sum because BabyAI missions range from 3 words ("open the door")
    to 30+ (BossLevel): a sum would make the input scale to the policy grow with mission
    length, a mean keeps it comparable across levels. Word order and repeated clauses
    are lost; that is the accepted limit of this baseline encoder.
    """

    kind = "bow"
    trainable = True

    def __init__(self, lang_dim: int, vocab: tuple[str, ...] = BABYAI_VOCAB) -> None:
        super().__init__()
        _word_to_id(tuple(vocab))  # validate <pad>/<unk> placement early
        self.lang_dim = int(lang_dim)
        self.vocab: tuple[str, ...] = tuple(vocab)
        # padding_idx keeps the <pad> row at zero and untrained; EmbeddingBag "mean"
        # also leaves it out of the average, and an empty mission gives a zero vector.
        self.embedding = nn.EmbeddingBag(len(self.vocab), self.lang_dim, mode="mean", padding_idx=PAD_ID)
        # Token ids per distinct mission string, kept on CPU: a run sees few distinct
        # missions relative to steps, so tokenising each only once saves Python work.
        self._ids_cache: dict[str, Tensor] = {}

    def _ids(self, mission: str) -> Tensor:
        ids = self._ids_cache.get(mission)
        if ids is None:
            ids = torch.tensor(tokenize(mission, self.vocab), dtype=torch.long)
            self._ids_cache[mission] = ids
        return ids

    def forward(self, missions: Sequence[str]) -> Tensor:
        """(len(missions), lang_dim); differentiable w.r.t. the embedding (it is recomputed every call)."""
        device = self.embedding.weight.device
        if len(missions) == 0:
            return self.embedding.weight.new_zeros((0, self.lang_dim))
        ids = [self._ids(m) for m in missions]
        # Flat ids + offsets: no padding tensor needed for variable-length missions.
        lengths = torch.tensor([0] + [len(x) for x in ids[:-1]], dtype=torch.long)
        offsets = torch.cumsum(lengths, 0)
        flat = torch.cat(ids)
        return self.embedding(flat.to(device), offsets.to(device))

    def encoder_state(self) -> dict[str, Any]:
        """Plain dict (tensors, str, int, list) loadable with torch.load(weights_only=True)."""
        return {
            "kind": self.kind,
            "lang_dim": self.lang_dim,
            "embedding_state_dict": {
                k: v.detach().cpu().clone() for k, v in self.embedding.state_dict().items()
            },
            "vocab": list(self.vocab),
        }

    def load_encoder_state(self, state: dict[str, Any]) -> None:
        _check_state_kind(state, self.kind)
        if list(state["vocab"]) != list(self.vocab):
            # Rows are indexed by vocab position: a different vocab would silently scramble words.
            raise ValueError(
                "saved BoW vocab differs from this encoder's; build it with BagOfWordsEncoder.from_state"
            )
        self.embedding.load_state_dict(state["embedding_state_dict"])

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BagOfWordsEncoder:
        """Rebuild from encoder_state(), with the saved vocabulary and dimension."""
        _check_state_kind(state, cls.kind)
        weight = state["embedding_state_dict"]["weight"]
        enc = cls(lang_dim=int(weight.shape[1]), vocab=tuple(state["vocab"]))
        enc.load_encoder_state(state)
        return enc


class GRUMissionEncoder(nn.Module):
    """Learned word embeddings read in order by a GRU (BabyAI's "gru" instruction encoder):
    (n missions) -> (n, lang_dim), the GRU's last hidden state.

    Word order matters here, unlike the bag of words: "put the yellow ball next to the grey box",
    "put the grey box next to the yellow ball" and "put the yellow box next to the grey ball" are
    one bag of words, so with "bow" the PutNext levels cannot tell which object to move where.
    """

    kind = "gru"
    trainable = True

    def __init__(self, lang_dim: int, vocab: tuple[str, ...] = BABYAI_VOCAB) -> None:
        super().__init__()
        _word_to_id(tuple(vocab))
        self.lang_dim = int(lang_dim)
        self.vocab: tuple[str, ...] = tuple(vocab)
        self.embedding = nn.Embedding(len(self.vocab), self.lang_dim, padding_idx=PAD_ID)
        self.gru = nn.GRU(self.lang_dim, self.lang_dim, batch_first=True)
        self._ids_cache: dict[str, Tensor] = {}

    def _ids(self, mission: str) -> Tensor:
        ids = self._ids_cache.get(mission)
        if ids is None:
            ids = torch.tensor(tokenize(mission, self.vocab) or [PAD_ID], dtype=torch.long)
            self._ids_cache[mission] = ids
        return ids

    def forward(self, missions: Sequence[str]) -> Tensor:
        if len(missions) == 0:
            return self.embedding.weight.new_zeros((0, self.lang_dim))
        ids = [self._ids(m) for m in missions]
        lengths = torch.tensor([len(x) for x in ids])  # stays on the CPU, as packing wants it
        padded = nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=PAD_ID)  # (n, L)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(padded.to(self.embedding.weight.device)),
            lengths,
            batch_first=True,
            enforce_sorted=False,
        )
        _, hidden = self.gru(packed)  # (1, n, lang_dim)
        return hidden[0]

    def encoder_state(self) -> dict[str, Any]:
        """Plain dict (tensors, str, int, list) loadable with torch.load(weights_only=True)."""
        return {
            "kind": self.kind,
            "lang_dim": self.lang_dim,
            "gru_encoder_state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            "vocab": list(self.vocab),
        }

    def load_encoder_state(self, state: dict[str, Any]) -> None:
        _check_state_kind(state, self.kind)
        if list(state["vocab"]) != list(self.vocab):
            raise ValueError("saved GRU-encoder vocab differs from this encoder's; use from_state")
        self.load_state_dict(state["gru_encoder_state_dict"])

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GRUMissionEncoder:
        _check_state_kind(state, cls.kind)
        enc = cls(lang_dim=int(state["lang_dim"]), vocab=tuple(state["vocab"]))
        enc.load_encoder_state(state)
        return enc


class DistilBertEncoder(nn.Module):
    """Frozen DistilBERT [CLS] vector -> frozen random Linear(dim, lang_dim): (n missions) -> (n, lang_dim).

    Nothing here is trained. The [CLS] feature of each distinct mission is computed once
    (eval mode, no grad) and cached; the small projection is applied on each call, so
    loading a saved projection later cannot leave stale cached outputs.

    The DistilBERT backbone is deliberately NOT a registered submodule: it would put
    ~66M frozen parameters into every policy state_dict / checkpoint. Only `lang_proj`
    is registered (and it is reproducible from `generator_seed` anyway). The backbone
    follows `lang_proj`'s device lazily, so `policy.to("cuda")` also speeds up encoding.
    """

    kind = "distilbert"
    trainable = False

    def __init__(
        self,
        lang_dim: int,
        model_name_or_path: str = "distilbert-base-uncased",
        generator_seed: int = 0,
    ) -> None:
        super().__init__()
        self.lang_dim = int(lang_dim)
        self.model_name_or_path = str(model_name_or_path)
        self.generator_seed = int(generator_seed)
        tokenizer, backbone = _load_distilbert(self.model_name_or_path)
        # Right padding so position 0 is [CLS] for every row of a padded batch.
        tokenizer.padding_side = "right"
        backbone.eval()
        backbone.requires_grad_(False)
        self.tokenizer = tokenizer
        # Bypass nn.Module registration so the backbone stays out of state_dict (class doc).
        object.__setattr__(self, "_backbone", backbone)
        config = backbone.config
        self.dim = int(getattr(config, "dim", None) or config.hidden_size)
        self.max_length = int(getattr(config, "max_position_embeddings", 512))

        # nn.Linear's own init draws from the global RNG; fork it so building an
        # encoder never changes the caller's random stream, then re-init from a seeded
        # generator with PyTorch's default Linear bounds U(-1/sqrt(dim), 1/sqrt(dim)).
        with torch.random.fork_rng(devices=[]):
            self.lang_proj = nn.Linear(self.dim, self.lang_dim)
        gen = torch.Generator().manual_seed(self.generator_seed)
        bound = 1.0 / math.sqrt(self.dim)
        with torch.no_grad():
            self.lang_proj.weight.copy_((torch.rand(self.lang_dim, self.dim, generator=gen) * 2 - 1) * bound)
            self.lang_proj.bias.copy_((torch.rand(self.lang_dim, generator=gen) * 2 - 1) * bound)
        self.lang_proj.requires_grad_(False)
        self._cls_cache: dict[str, Tensor] = {}

    @property
    def backbone(self) -> nn.Module:
        return self._backbone

    def _encode_new(self, missions: list[str]) -> None:
        # One batched backbone pass over the missions not seen before.
        device = self.lang_proj.weight.device
        backbone = self._backbone
        if next(backbone.parameters()).device != device:
            backbone.to(device)
        backbone.eval()  # dropout off even if someone called .train() on the backbone
        batch = self.tokenizer(
            missions,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            hidden = backbone(**batch).last_hidden_state  # (n, seq, dim)
        for mission, row in zip(missions, hidden[:, 0]):
            self._cls_cache[mission] = row.detach().clone()

    def forward(self, missions: Sequence[str]) -> Tensor:
        """(len(missions), lang_dim), no grad. Each distinct mission goes through DistilBERT once."""
        device = self.lang_proj.weight.device
        if len(missions) == 0:
            return torch.zeros((0, self.lang_dim), device=device)
        new = [m for m in dict.fromkeys(missions) if m not in self._cls_cache]
        if new:
            self._encode_new(new)
        # Cached rows follow the projection's device/dtype if the module was moved/cast.
        weight = self.lang_proj.weight
        with torch.no_grad():
            cls = torch.stack([self._cls_cache[m].to(device, weight.dtype) for m in missions])
            return self.lang_proj(cls)

    def encoder_state(self) -> dict[str, Any]:
        """Plain dict (tensors, str, int) loadable with torch.load(weights_only=True)."""
        return {
            "kind": self.kind,
            "lang_dim": self.lang_dim,
            "lang_proj_state_dict": {
                k: v.detach().cpu().clone() for k, v in self.lang_proj.state_dict().items()
            },
            "model_name_or_path": self.model_name_or_path,
        }

    def load_encoder_state(self, state: dict[str, Any]) -> None:
        _check_state_kind(state, self.kind)
        weight = state["lang_proj_state_dict"]["weight"]
        if tuple(weight.shape) != (self.lang_dim, self.dim):
            raise ValueError(
                f"saved lang_proj is {tuple(weight.shape)} but this encoder needs ({self.lang_dim}, {self.dim}) "
                f"(model {self.model_name_or_path!r}; saved with {state.get('model_name_or_path')!r})"
            )
        self.lang_proj.load_state_dict(state["lang_proj_state_dict"])

    @classmethod
    def from_state(cls, state: dict[str, Any], model_name_or_path: str | None = None) -> DistilBertEncoder:
        """Rebuild from encoder_state(); the weights come from `model_name_or_path`, else the saved one."""
        _check_state_kind(state, cls.kind)
        lang_dim = int(state["lang_proj_state_dict"]["weight"].shape[0])
        enc = cls(
            lang_dim=lang_dim,
            model_name_or_path=model_name_or_path or state["model_name_or_path"],
        )
        enc.load_encoder_state(state)
        return enc


def _load_distilbert(model_name_or_path: str) -> tuple[Any, nn.Module]:
    # Imported here so that this module (and the BoW encoder) works without transformers.
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise MissionEncoderError(
            f"the DistilBERT mission encoder ({model_name_or_path!r}) needs the 'transformers' package: "
            "pip install transformers==5.23.0, or use the 'bow' encoder"
        ) from exc
    try:
        # local_files_only: never reach for the network (runs are offline); a name is
        # looked up in the local Hugging Face cache, a directory is read directly.
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, local_files_only=True)
        model = AutoModel.from_pretrained(model_name_or_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissionEncoderError(
            f"DistilBERT tokenizer/weights not found locally for {model_name_or_path!r} (no download is tried): "
            f"run `hf download {model_name_or_path}` once on a machine with internet and copy its Hugging Face "
            "cache here, or pass a local directory holding a tokenizer and model saved with save_pretrained"
        ) from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:  # e.g. a .bin holding code, truncated
        raise MissionEncoderError(
            f"DistilBERT weights in {model_name_or_path!r} are corrupt or refused by torch's safe loader "
            f"({type(exc).__name__}): save the model again with save_pretrained (safetensors)"
        ) from None
    if not hasattr(model.config, "dim") and not hasattr(model.config, "hidden_size"):
        raise MissionEncoderError(f"{model_name_or_path!r} is not a DistilBERT-like encoder (no hidden size)")
    return tokenizer, model


def _check_state_kind(state: dict[str, Any], kind: str) -> None:
    saved = state.get("kind", kind)  # states without "kind" are accepted as the expected kind
    if saved != kind:
        raise ValueError(f"encoder state is for kind {saved!r}, not {kind!r}")


MISSION_ENCODER_KINDS: tuple[str, ...] = ("bow", "gru", "distilbert")


def build_mission_encoder(
    kind: str,
    lang_dim: int,
    distilbert_path: str = "distilbert-base-uncased",
    state: dict[str, Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build a mission encoder of `kind` ("bow" or "distilbert"), loading `state` if given.

    `seed` fixes the DistilBERT projection init (via its own generator; the global RNG is
    untouched). The BoW embedding is initialised from the global RNG like any other
    learned layer of the policy, so the trainer's global seed governs it.
    For "distilbert" the weights are read from `distilbert_path` (the state's
    `model_name_or_path` is only a record: the same model may live elsewhere on this machine).
    """
    if kind == "bow":
        if state is not None:
            enc = BagOfWordsEncoder.from_state(state)
            if enc.lang_dim != int(lang_dim):
                raise ValueError(f"saved BoW encoder has lang_dim {enc.lang_dim}, asked for {lang_dim}")
            return enc
        return BagOfWordsEncoder(lang_dim)
    if kind == "gru":
        if state is not None:
            enc = GRUMissionEncoder.from_state(state)
            if enc.lang_dim != int(lang_dim):
                raise ValueError(f"saved GRU encoder has lang_dim {enc.lang_dim}, asked for {lang_dim}")
            return enc
        return GRUMissionEncoder(lang_dim)
    if kind == "distilbert":
        enc = DistilBertEncoder(lang_dim, model_name_or_path=distilbert_path, generator_seed=seed)
        if state is not None:
            enc.load_encoder_state(state)
        return enc
    raise ValueError(
        f"unknown mission encoder kind {kind!r}; valid kinds: {', '.join(MISSION_ENCODER_KINDS)}"
    )
