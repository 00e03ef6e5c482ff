"""--aux_door_weight: a head reads, from the memory after each step, the colour of the locked door last
in view (babyai_env.door_labels, computed from an episode's own views wherever the learner's chunks
come from: live collection, streamed demo columns, replayed windows); the labels follow the env, the
loss trains from a demo store and online, resumes, and bad weights are refused.

    pytest tests/test_aux_door.py
"""

from __future__ import annotations

import itertools

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX

from mop.babyai_env import (
    NO_DOOR,
    NUM_COLOURS,
    SafeBot,
    door_labels,
    locked_door_colour,
    locked_doors,
    make_env,
    quiet_reset,
)
from tests.test_aux_target import check_head_trains_from_demos_and_resumes

LEVEL = "BabyAI-Unlock-v0"


def view(*doors: tuple[int, int, int]) -> np.ndarray:
    """A 7 x 7 view of empty cells with doors (colour, state, x) on row 0."""
    image = np.zeros((7, 7, 3), np.uint8)
    image[..., 0] = 1
    for colour, state, x in doors:
        image[x, 0] = (4, colour, state)
    return image


def test_door_labels_fill_forward_from_the_first_locked_door_in_view():
    locked, closed = 2, 1
    views = np.stack(
        [view(), view((3, closed, 1)), view((4, locked, 2)), view(), view((1, locked, 0), (5, locked, 3))]
    )
    assert locked_door_colour(views).tolist() == [NO_DOOR, NO_DOOR, 4, NO_DOOR, 1]  # closed is not locked
    assert door_labels(views).tolist() == [NO_DOOR, NO_DOOR, 4, 4, 1]
    assert door_labels(views, start=2).tolist() == [2, 2, 4, 4, 1]  # a live episode's earlier chunk
    assert door_labels(views[:0]).tolist() == [] and NUM_COLOURS == len(COLOR_TO_IDX) == 6


def bot_views(task: str, seed: int) -> tuple[list[np.ndarray], int]:
    """The views of the bot's own episode on layout `seed`, and its locked door's colour index."""
    env = make_env(task)
    obs = quiet_reset(env, seed)
    (door,) = locked_doors(env)
    colour = COLOR_TO_IDX[env.unwrapped.grid.get(*door).color]
    bot, views = SafeBot(env), []
    while True:
        views.append(obs["image"])
        obs, _, terminated, truncated, _ = env.step(bot.label(None))
        if terminated or truncated:
            return views, colour


def test_the_bot_s_episode_is_labelled_with_its_door_from_the_step_it_comes_into_view():
    views, colour = bot_views("BabyAI-GoToImpUnlock-v0", 11)
    labels = door_labels(np.stack(views))
    first = int(np.flatnonzero(labels != NO_DOOR)[0])
    assert (labels[:first] == NO_DOOR).all() and (labels[first:] == colour).all()
    locked = [((v[..., 0] == 4) & (v[..., 2] == 2)).any() for v in views]
    assert locked.index(True) == first


def test_live_collection_carries_the_label_across_chunks_and_streams_read_it_from_the_views():
    """The collector's labels equal door_labels over each whole episode, a label set in one chunk
    going on in the next (Unlock's bot sees its door early: 3 chunks of 12 steps); EpisodeColumns
    playing the assembled episodes back labels its columns the same, and so does a replay window."""
    from mop.collection import Collector
    from mop.replay_buffer import EpisodeAssembler, episodes_as_chunk
    from mop.streams import EpisodeColumns
    from tests.test_env import small_agent

    policy, encoder = small_agent()
    collector = Collector(LEVEL, [0, 1], 0, 40, "raw", teacher_forcing=1.0, record_doors=True)
    assembler = EpisodeAssembler(2)
    chunks, episodes = [], []
    for _ in range(4):
        chunks.append(collector.collect(policy, encoder, 12))
        episodes += assembler.add(chunks[-1])
    doors = np.concatenate([c["door"] for c in chunks])  # (48, 2)
    images = np.concatenate([c["image"] for c in chunks])
    done = np.concatenate([c["done"] for c in chunks])
    carried = 0
    for k in range(2):  # each env's episodes: split where one ends
        ends = [-1, *np.flatnonzero(done[:, k]).tolist()]
        for a, b in zip(ends[:-1], ends[1:]):
            rows = slice(a + 1, b + 1)
            assert doors[rows, k].tolist() == door_labels(images[rows, k]).tolist()
            # a label set before a chunk's end and still set after it: carried by the slot
            carried += sum(doors[t - 1, k] != NO_DOOR for t in (12, 24, 36) if a + 1 < t <= b)
    assert carried, "no label went on from one chunk into the next"
    assert (Collector(LEVEL, [0], 0, 40, "raw").collect(policy, encoder, 12)["door"] == NO_DOOR).all()
    ordered = itertools.cycle(range(len(episodes)))
    stream = EpisodeColumns(1, 16, lambda: next(ordered), lambda i: episodes[i], policy.memory_size)
    played = np.concatenate([stream.next_chunk()["door"][:, 0] for _ in range(3)])
    want = np.concatenate([door_labels(ep.image) for ep in episodes])[: len(played)]
    assert played.tolist() == want.tolist() and (played != NO_DOOR).any()
    # a stream restored from its state (a --resume) goes on with the same labels mid-episode
    state, (ahead, fresh) = stream.state(), itertools.tee(ordered)
    stream.draw = ahead.__next__
    restored = EpisodeColumns(1, 16, lambda: next(fresh), lambda i: episodes[i], policy.memory_size)
    restored.load_state(state)
    assert restored.next_chunk()["door"].tolist() == stream.next_chunk()["door"].tolist()
    window = episodes_as_chunk(episodes[:2])
    assert window["door"][: len(episodes[1]), 1].tolist() == door_labels(episodes[1].image).tolist()


def test_the_door_head_trains_from_demos_and_resumes(tmp_path):
    check_head_trains_from_demos_and_resumes(tmp_path, "door", outputs=NUM_COLOURS)


# online DAgger and the bad weights: tests/test_aux_key.py, for both heads
