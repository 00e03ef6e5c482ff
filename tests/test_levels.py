"""Every registered BabyAI level, end to end: make it, reset it on an evaluation seed, encode the
observation both ways, and let the bot play one episode.

The bot solves most levels; where it does not, the level is listed in KNOWN_BOT_FAILURES with the
failure measured on evaluation seeds EVAL_SEED_START + 0..19 (minigrid 3.2.0), and the test checks
that the failure is reported cleanly (SafeBot returns None with `failure` set, or the episode ends
without reward) rather than crashing or hanging. A listed level that starts succeeding fails the
test too, so the list stays true.

    pytest tests/test_levels.py
"""

import pytest
import torch

from mop.babyai_env import (
    EVAL_SEED_START,
    OBS_ENCODINGS,
    SafeBot,
    babyai_task_ids,
    encode_obs,
    make_env,
    obs_dim,
    quiet_reset,
)

SURVEYED = tuple(range(20))  # evaluation episodes (seed EVAL_SEED_START + k) the lists below were measured on

# Levels where the bot fails on some surveyed episodes: the reason, then those episodes.
KNOWN_BOT_FAILURES = {
    "BabyAI-KeyInBox-v0": "AssertionError in the bot's _find_obj_pos on every seed: the key is hidden "
    "inside a box and the bot only looks for objects lying on the grid",
    "BabyAI-PutNextS5N2Carrying-v0": "AssertionError '0nothing left to explore' on every seed: the agent "
    "starts carrying the object to move and the bot searches the grid for it",
    "BabyAI-PutNextS6N3Carrying-v0": "AssertionError '0nothing left to explore' on every seed (as S5N2Carrying)",
    "BabyAI-PutNextS7N4Carrying-v0": "AssertionError '0nothing left to explore' on every seed (as S5N2Carrying)",
    "BabyAI-OpenDoorsOrderN2Debug-v0": "episode ends with no reward on 13/20 seeds: the strict (debug) "
    "verifier re-checks the toggle that opens the first door against the second door's instruction and "
    "fails the episode; the same actions succeed on OpenDoorsOrderN2",
    "BabyAI-OpenDoorsOrderN4Debug-v0": "episode ends with no reward on 18/20 seeds (as OpenDoorsOrderN2Debug)",
    "BabyAI-UnlockToUnlock-v0": "BotFailure 'subgoal stack exceeded 100' on 6/20 seeds: the bot's replan "
    "keeps pushing subgoals (unbounded it never returns)",
    "BabyAI-GoToImpUnlock-v0": "BotFailure 'subgoal stack exceeded 100' on 2/20 seeds (as UnlockToUnlock)",
    "BabyAI-SynthS5R2-v0": "episode ends with no reward (truncated at max_steps 150) on 1/20 seeds",
}
FAILING_EPISODES = {
    "BabyAI-KeyInBox-v0": SURVEYED,
    "BabyAI-PutNextS5N2Carrying-v0": SURVEYED,
    "BabyAI-PutNextS6N3Carrying-v0": SURVEYED,
    "BabyAI-PutNextS7N4Carrying-v0": SURVEYED,
    "BabyAI-OpenDoorsOrderN2Debug-v0": (1, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19),
    "BabyAI-OpenDoorsOrderN4Debug-v0": (0, 1, 2, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19),
    "BabyAI-UnlockToUnlock-v0": (4, 7, 9, 17, 18, 19),
    "BabyAI-GoToImpUnlock-v0": (6, 14),
    "BabyAI-SynthS5R2-v0": (18,),
}


def cases() -> list:
    """Every level on the first evaluation episode; a level that fails only sometimes also on its
    first failing episode."""
    out = []
    for task in babyai_task_ids():
        episodes = {0} | ({min(FAILING_EPISODES[task])} if task in FAILING_EPISODES else set())
        out += [pytest.param(task, k, id=f"{task}-episode{k}") for k in sorted(episodes)]
    return out


def check_encodings(obs: dict, env) -> None:
    image, direction = torch.as_tensor(obs["image"]), torch.as_tensor(obs["direction"])
    carrying = torch.tensor(float(env.carrying is not None))
    for encoding in OBS_ENCODINGS:
        x = encode_obs(image, direction, carrying, encoding)
        assert x.shape == (obs_dim(encoding),), encoding
        assert torch.isfinite(x).all(), encoding


def play(env) -> tuple[str, str | None, dict]:
    """One bot episode from the current state: ("success" | "bot_failure" | "no_success", detail, last obs)."""
    bot = SafeBot(env)
    action, obs = None, {}
    for _ in range(env.max_steps):
        action = bot.label(action)
        if action is None:
            return "bot_failure", bot.failure, obs
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            if terminated and reward > 0:
                return "success", None, obs
            return "no_success", f"terminated={terminated} truncated={truncated} reward={reward}", obs
    return "no_success", "max_steps actions without the episode ending", obs


@pytest.mark.parametrize("task_id, episode", cases())
def test_bot_plays_every_level(task_id, episode):
    seed = EVAL_SEED_START + episode
    env = make_env(task_id)
    obs = quiet_reset(env, seed)
    assert isinstance(obs["mission"], str) and obs["mission"]
    assert env.max_steps > 0
    check_encodings(obs, env)

    outcome, detail, last = play(env)
    if last:
        check_encodings(last, env)
    if episode not in FAILING_EPISODES.get(task_id, ()):
        assert outcome == "success", f"{task_id} seed {seed}: {outcome} ({detail})"
        return
    # A known failure: reported cleanly, and the kind of failure the list says.
    reason = KNOWN_BOT_FAILURES[task_id]
    assert outcome != "success", f"{task_id} seed {seed} now succeeds: update KNOWN_BOT_FAILURES"
    if outcome == "bot_failure":
        assert isinstance(detail, str) and detail
        assert detail.split(":")[0] in reason, f"{task_id} seed {seed}: {detail!r} is not {reason!r}"
    else:
        assert "no reward" in reason, f"{task_id} seed {seed}: {detail} is not {reason!r}"


def test_failure_list_names_real_levels():
    assert KNOWN_BOT_FAILURES.keys() == FAILING_EPISODES.keys()
    assert set(KNOWN_BOT_FAILURES) <= set(babyai_task_ids())
    assert all(set(seeds) <= set(SURVEYED) for seeds in FAILING_EPISODES.values())


def test_every_level_has_a_positive_step_limit():
    # RoomGridLevel sets max_steps in reset() (0 before it) unless it is fixed at construction.
    unlimited = []
    for task_id in babyai_task_ids():
        env = make_env(task_id)
        quiet_reset(env, EVAL_SEED_START)
        if not env.max_steps > 0:
            unlimited.append((task_id, env.max_steps))
    assert unlimited == []


def test_unlock_pickup_step_limit_is_fixed():
    env = make_env("BabyAI-UnlockPickup-v0")
    assert env.max_steps == 288  # minigrid 3.2.0's typo would leave 72
    quiet_reset(env, EVAL_SEED_START)
    assert env.max_steps == 288
