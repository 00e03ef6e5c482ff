"""BabyAI's level names and the observation sizes, without importing minigrid, gymnasium or torch:
what a command line checks before its heavy imports (a misspelt level is refused in a fraction of
a second). `BABYAI_LEVELS` is minigrid 3.x's registry of BabyAI-* ids; tests/test_env.py checks it
equals the installed minigrid's, so an upgrade that adds or drops a level fails a test, not a run.

    check_task_ids("BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0")   # ['BabyAI-GoToLocal-v0', 'BabyAI-PickupLoc-v0']
"""

from __future__ import annotations

import difflib
import math

from mop.checks import ConfigError, check_number

# --bot_revision: which labelling bot (babyai_env.SafeBot). 1 (2026-11-30): with its hands full
# where it means to pick something up it puts what it holds down first, and a drop with nothing held
# or a filled cell ahead replans; 0: minigrid's, which asserts there (SafeBot gives up: DAgger loses
# the episode's labels), the bot of every run before the key existed.
BOT_REVISION = 1
BOT_REVISIONS = (0, 1)

_NAMES = """
    ActionObjDoor-v0 BlockedUnlockPickup-v0 BossLevel-v0 BossLevelNoUnlock-v0 FindObjS5-v0
    FindObjS6-v0 FindObjS7-v0 GoTo-v0 GoToDoor-v0 GoToImpUnlock-v0 GoToLocal-v0 GoToLocalS5N2-v0
    GoToLocalS6N2-v0 GoToLocalS6N3-v0 GoToLocalS6N4-v0 GoToLocalS7N4-v0 GoToLocalS7N5-v0
    GoToLocalS8N2-v0 GoToLocalS8N3-v0 GoToLocalS8N4-v0 GoToLocalS8N5-v0 GoToLocalS8N6-v0
    GoToLocalS8N7-v0 GoToObj-v0 GoToObjDoor-v0 GoToObjMaze-v0 GoToObjMazeOpen-v0
    GoToObjMazeS4-v0 GoToObjMazeS4R2-v0 GoToObjMazeS5-v0 GoToObjMazeS6-v0 GoToObjMazeS7-v0
    GoToObjS4-v0 GoToObjS6-v1 GoToOpen-v0 GoToRedBall-v0 GoToRedBallGrey-v0
    GoToRedBallNoDists-v0 GoToRedBlueBall-v0 GoToSeq-v0 GoToSeqS5R2-v0 KeyCorridor-v0
    KeyCorridorS3R1-v0 KeyCorridorS3R2-v0 KeyCorridorS3R3-v0 KeyCorridorS4R3-v0
    KeyCorridorS5R3-v0 KeyCorridorS6R3-v0 KeyInBox-v0 MiniBossLevel-v0 MoveTwoAcrossS5N2-v0
    MoveTwoAcrossS8N9-v0 OneRoomS12-v0 OneRoomS16-v0 OneRoomS20-v0 OneRoomS8-v0 Open-v0
    OpenDoor-v0 OpenDoorColor-v0 OpenDoorDebug-v0 OpenDoorLoc-v0 OpenDoorsOrderN2-v0
    OpenDoorsOrderN2Debug-v0 OpenDoorsOrderN4-v0 OpenDoorsOrderN4Debug-v0 OpenRedBlueDoors-v0
    OpenRedBlueDoorsDebug-v0 OpenRedDoor-v0 OpenTwoDoors-v0 Pickup-v0 PickupAbove-v0
    PickupDist-v0 PickupDistDebug-v0 PickupLoc-v0 PutNextLocal-v0 PutNextLocalS5N3-v0
    PutNextLocalS6N4-v0 PutNextS4N1-v0 PutNextS5N1-v0 PutNextS5N2-v0 PutNextS5N2Carrying-v0
    PutNextS6N3-v0 PutNextS6N3Carrying-v0 PutNextS7N4-v0 PutNextS7N4Carrying-v0 Synth-v0
    SynthLoc-v0 SynthS5R2-v0 SynthSeq-v0 UnblockPickup-v0 Unlock-v0 UnlockLocal-v0
    UnlockLocalDist-v0 UnlockPickup-v0 UnlockPickupDist-v0 UnlockToUnlock-v0
"""
BABYAI_LEVELS: tuple[str, ...] = tuple(f"BabyAI-{name}" for name in _NAMES.split())

# The levels of the level table (bench/levels.py) and of the fast env's equality check.
LEVEL_TABLE = [
    "BabyAI-GoToObj-v0",
    "BabyAI-GoToLocal-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-PutNextLocal-v0",
    "BabyAI-UnlockPickup-v0",
    "BabyAI-GoToObjMaze-v0",
    "BabyAI-GoTo-v0",
    "BabyAI-Pickup-v0",
    "BabyAI-Unlock-v0",
    "BabyAI-Synth-v0",
    "BabyAI-GoToImpUnlock-v0",
]

OBS_ENCODINGS = ("raw", "onehot")
CHANNEL_SIZES = (11, 6, 3)  # minigrid OBJECT_TO_IDX, COLOR_TO_IDX, STATE_TO_IDX
# babyai_env.SafeBot.subgoal's classes, in the order --aux_subgoal_weight's head and the chunks'
# `subgoal` use (here, without minigrid, so that a config naming them is checked before it loads).
SUBGOAL_KINDS = (
    "explore",
    "go to mission object",
    "go to other object",
    "go to door",
    "go to locked door",
    "go to cell",
    "open",
    "pick up",
    "drop",
    "close",
)


def subgoal_weights(value: object, what: str = "subgoal_ce_weights") -> dict[str, float]:
    """{kind: weight} from a mapping (YAML) or "kind=w,kind=w" (a command line), each kind one of
    SUBGOAL_KINDS and each weight a finite number > 0 (checks.check_number); ConfigError naming
    `what` otherwise."""
    if isinstance(value, str):
        pairs = [item.rpartition("=") for item in value.split(",")]
        if not all(eq for _, eq, _ in pairs):
            raise ConfigError(f"{what} must be 'kind=weight,...' or a mapping, got {value!r}")
        value = {kind.strip(): weight.strip() for kind, _, weight in pairs}
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{what} must be a mapping of subgoal kinds to weights, got {value!r}")
    out = {}
    for kind, weight in value.items():
        if kind not in SUBGOAL_KINDS:
            raise ConfigError(f"{what}: {kind!r} is not a subgoal kind (one of {', '.join(SUBGOAL_KINDS)})")
        try:  # a command line's weights are text; check_number refuses what is not a number by name
            number = float(weight) if isinstance(weight, str) else weight
        except ValueError:
            number = weight
        out[kind] = check_number(number, f"{what}: the weight of {kind!r}", low=0, low_open=True)
    return out


def obs_dim(encoding: str) -> int:
    if encoding == "raw":
        return 3 * 7 * 7 + 4 + 1  # 152, the earlier system's input_dim
    if encoding == "onehot":
        return sum(CHANNEL_SIZES) * 7 * 7 + 4 + 1  # 985
    raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {encoding!r}")


def babyai_task_ids() -> list[str]:
    return list(BABYAI_LEVELS)


def check_task_id(task_id: str) -> str:
    """Return task_id if it is a registered BabyAI level, else raise ValueError with close matches."""
    ids = babyai_task_ids()
    if task_id in ids:
        return task_id
    close = difflib.get_close_matches(task_id, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see babyai_env.babyai_task_ids()"
    raise ValueError(f"unknown task_id {task_id!r}{hint}")


def check_task_ids(task_id: str) -> list[str]:
    """The levels of a task_id: one level, or a comma list of distinct levels (a multi-task run),
    each checked by check_task_id; ValueError naming the bad one."""
    if "," not in task_id:
        return [check_task_id(task_id)]
    levels = [t.strip() for t in task_id.split(",")]
    if not all(levels):
        raise ValueError(f"{task_id!r} has an empty level between its commas")
    for level in levels:
        check_task_id(level)
    repeated = sorted({t for t in levels if levels.count(t) > 1})
    if repeated:
        raise ValueError(f"{task_id!r} names {', '.join(repeated)} more than once (use --task_weights)")
    return levels


def env_levels(levels: list[str], num_envs: int, weights: list[float] | None = None) -> list[str]:
    """The level of each training env index of a multi-task run: each level gets a share of the
    envs proportional to its weight (largest remainder, ties to the earlier level; default equal
    weights), and the levels are interleaved over the env indices, so the consecutive env slices
    of the workers each hold a mix. Deterministic: the same arguments give the same list.
    ValueError if the weights do not fit the levels or a level would get no env."""
    weights = [1.0] * len(levels) if weights is None else [float(w) for w in weights]
    if len(weights) != len(levels):
        raise ValueError(
            f"{len(weights)} task_weights for {len(levels)} level(s) in task_id: give one weight per level"
        )
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"task_weights must be positive finite numbers, got {weights}")
    quotas = [num_envs * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(levels)), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in by_remainder[: num_envs - sum(counts)]:
        counts[k] += 1
    empty = [levels[k] for k in range(len(levels)) if counts[k] == 0]
    if empty:
        raise ValueError(
            f"num_envs {num_envs} leaves {', '.join(empty)} without an env at these weights: "
            "raise num_envs or that level's weight"
        )
    # Env j of level k sits at (j + 0.5) / count_k of the index range: evenly spread, interleaved.
    slots = sorted(((j + 0.5) / counts[k], k) for k in range(len(levels)) for j in range(counts[k]))
    return [levels[k] for _, k in slots]


def checked_levels(task_id: str) -> list[str]:
    """check_task_ids for a config: ConfigError naming the key (one `error:` line) instead."""
    try:
        return check_task_ids(task_id)
    except ValueError as e:
        raise ConfigError(f"task_id: {e}") from None
