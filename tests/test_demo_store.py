"""The demo store (mop/demo_store.py) and its generation (mop/bot_demos.py, demos.py): bit-exact
round trips, refusal of every bad file, resumption after a kill with no lost or duplicated demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mop import bot_demos
from mop.babyai_env import NO_SUBGOAL, NO_TARGET, SUBGOAL_KINDS, demo_episode_seed
from mop.demo_store import MANIFEST, DemoStore, DemoStoreError
from mop.replay_buffer import BufferError, StoredEpisode

TASK = "BabyAI-GoToRedBallGrey-v0"


def fake_episode(seed: int) -> StoredEpisode:
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 9))
    return StoredEpisode(
        rng.integers(0, 11, (T, 7, 7, 3)).astype(np.uint8),
        rng.integers(0, 4, T).astype(np.uint8),
        rng.integers(0, 2, T).astype(np.uint8),
        rng.integers(-1, 7, T).astype(np.int8),
        f"go to the {['red', 'blue', 'green'][seed % 3]} ball",
        int(seed),
        target=np.where(rng.random((T, 1)) < 0.2, NO_TARGET, rng.integers(-9, 10, (T, 2))).astype(np.int8),
        subgoal=np.where(rng.random(T) < 0.1, NO_SUBGOAL, rng.integers(0, len(SUBGOAL_KINDS), T)).astype(
            np.int8
        ),
        key=np.where(rng.random((T, 1)) < 0.5, NO_TARGET, rng.integers(-9, 10, (T, 2))).astype(np.int8),
        door_place=np.where(rng.random((T, 1)) < 0.5, NO_TARGET, rng.integers(-9, 10, (T, 2))).astype(
            np.int8
        ),
    )


@pytest.fixture
def fake_bot(monkeypatch):
    """bot_episode without an env: a seeded random episode; every 5th candidate unsolved."""

    def play(env, seed, fast=True):
        return (None, "unsolved") if seed % 5 == 0 else (fake_episode(seed), None)

    monkeypatch.setattr(bot_demos, "bot_episode", play)
    monkeypatch.setattr(bot_demos, "make_env", lambda *a, **k: None)
    return play


def small_store(tmp_path, n=7, task=TASK) -> tuple[DemoStore, list[StoredEpisode]]:
    store = DemoStore.create(tmp_path / "s", task, demo_seed=0)
    eps = [fake_episode(s) for s in range(1, n + 1)]
    store.append(eps[:4], next_candidate=4)
    store.append(eps[4:], next_candidate=n)
    return store, eps


def test_round_trip_is_bit_exact(tmp_path):
    store, eps = small_store(tmp_path)
    again = DemoStore.open(tmp_path / "s", task_id=TASK)
    assert len(again) == 7 and again.frames == sum(len(e) for e in eps)
    for i, ep in enumerate(eps):
        got = again.episode(i)
        assert isinstance(got, StoredEpisode) and got.equals(ep)
        assert got.image.dtype == np.uint8 and got.label.dtype == np.int8
    assert isinstance(again.episode(3).image, np.memmap)  # read from the map, not copied into RAM
    assert again[-1].equals(eps[-1]) and [e.seed for e in again[2:4]] == [3, 4]
    assert again.frames_of(5) == sum(len(e) for e in eps[:5])
    assert again.targets and again.subgoals and again.keys and again.door_places
    assert again.verify() == 18  # 2 chunks x 9 files


def test_a_truncated_file_is_refused(tmp_path):
    small_store(tmp_path)
    f = tmp_path / "s" / "c00001.image.npy"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DemoStoreError, match="c00001.image.npy' is truncated"):
        DemoStore.open(tmp_path / "s")


def test_a_damaged_file_is_refused_on_read(tmp_path):
    small_store(tmp_path)
    f = tmp_path / "s" / "c00000.label.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    store = DemoStore.open(tmp_path / "s")  # sizes agree
    store.episode(5)  # chunk 1 is intact
    with pytest.raises(DemoStoreError, match="c00000.label.npy' does not match its checksum"):
        store.episode(0)


@pytest.mark.parametrize(
    "key, value, match",
    [
        (
            "task_id",
            "BabyAI-GoToLocal-v0",
            "holds task_id 'BabyAI-GoToLocal-v0', not 'BabyAI-GoToRedBallGrey-v0'",
        ),
        ("observation", "rgb_image", "holds observation 'rgb_image'"),
        ("format_version", 1, "format_version 1, this code reads 2; it was written by an older format"),
        ("kind", "episode_buffer", "is not a demo store manifest"),
    ],
)
def test_another_level_encoding_or_older_format_is_refused(tmp_path, key, value, match):
    small_store(tmp_path)
    path = tmp_path / "s" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest[key] = value
    path.write_text(json.dumps(manifest))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "s").iterdir())
    with pytest.raises(DemoStoreError, match=match):
        DemoStore.open(tmp_path / "s", task_id=TASK)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "s").iterdir()) == before


def test_a_count_beyond_the_store_is_refused(tmp_path):
    store, _ = small_store(tmp_path)
    assert len(store.head(7)) == 7
    with pytest.raises(DemoStoreError, match="holds 7 demos, not the 8 asked"):
        store.head(8)


def test_generation_is_appendable_and_a_kill_loses_or_duplicates_nothing(tmp_path, fake_bot):
    # one uninterrupted generation of 20 demos
    whole = bot_demos.open_store(tmp_path / "a", TASK, 0, create=True)
    bot_demos.extend_store(whole, 20, progress=False, chunk_episodes=3)
    expected = [demo_episode_seed(0, k) for k in range(25) if demo_episode_seed(0, k) % 5][:20]
    assert [whole[i].seed for i in range(20)] == expected

    # killed after 2 commits (an uncommitted chunk file lying there), resumed, then appended to
    store = bot_demos.open_store(tmp_path / "b", TASK, 0, create=True)

    def die(chunks):
        if chunks == 2:
            (store.root / "c00002.image.npy").write_bytes(b"half a chunk")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bot_demos.extend_store(store, 20, progress=False, chunk_episodes=3, on_commit=die)
    store = bot_demos.open_store(tmp_path / "b", TASK, 0)
    assert len(store) == 6
    bot_demos.extend_store(store, 11, progress=False, chunk_episodes=3)
    bot_demos.extend_store(
        bot_demos.open_store(tmp_path / "b", TASK, 0), 20, progress=False, chunk_episodes=3
    )
    store = bot_demos.open_store(tmp_path / "b", TASK, 0)
    assert len(store) == 20 and all(store[i].equals(whole[i]) for i in range(20))
    unsolved = sum(demo_episode_seed(0, k) % 5 == 0 for k in range(whole.manifest["next_candidate"]))
    assert store.manifest["skipped"] == whole.manifest["skipped"] == {"bot_failure": 0, "unsolved": unsolved}
    assert store.manifest["next_candidate"] == whole.manifest["next_candidate"] == 25
    store.verify()


def test_load_or_generate_uses_the_store_and_still_reads_the_old_cache(tmp_path, fake_bot):
    buf, meta, path = bot_demos.load_or_generate_demos(TASK, 5, 0, tmp_path, progress=False)
    assert path == bot_demos.store_path(tmp_path, TASK, 0) and meta["kind"] == "demo_store"
    assert len(buf) == 5 and buf.frames == sum(len(ep) for ep in buf.episodes)
    order = buf.next_epoch_batch(10**6)  # DemoSource's sampling works on the lazy view
    assert sorted(ep.seed for ep in order) == sorted(ep.seed for ep in buf.episodes)
    # a larger request extends the same store; a smaller one reads its head
    big, meta, _ = bot_demos.load_or_generate_demos(TASK, 9, 0, tmp_path, progress=False)
    assert meta["store_episodes"] == 9 and all(big.episodes[i].equals(buf.episodes[i]) for i in range(5))
    with pytest.raises(BufferError, match="holds 9 demos, not the 12 asked"):
        bot_demos.load_or_generate_demos(TASK, 12, 0, tmp_path, progress=False, generate=False)
    # the older single-file cache of exactly this request is still read
    old, info = bot_demos.generate_demos(TASK, 3, 1, progress=False)
    old.save(bot_demos.demo_path(tmp_path, TASK, 3, 1), kind="demos", **info)
    again, meta, path = bot_demos.load_or_generate_demos(TASK, 3, 1, tmp_path, progress=False)
    assert path.suffix == ".npz" and meta["kind"] == "demos"
    assert all(x.equals(y) for x, y in zip(old.episodes, again.episodes))


def test_real_bot_demos_round_trip(tmp_path):
    buf, info = bot_demos.generate_demos(TASK, 4, 2, progress=False)
    store = bot_demos.open_store(tmp_path, TASK, 2, create=True)
    bot_demos.extend_store(store, 4, progress=False, chunk_episodes=3)
    assert len(store) == 4 and all(store[i].equals(buf.episodes[i]) for i in range(4))


def test_demos_cli_refuses_a_count_the_store_does_not_hold(tmp_path, capsys, fake_bot):
    import demos

    store, _ = small_store(tmp_path / TASK)  # not where demos.py looks: nothing there
    assert demos.main(["--task_id", TASK, "--demos", "5", "--check", "--demos_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "set_0/manifest.json' does not exist" in err[0]
    assert not (tmp_path / TASK / "set_0").exists()
    assert (
        demos.main(["--task_id", TASK, "--demos", "5", "--demos_dir", str(tmp_path), "--num_workers", "1"])
        == 0
    )
    assert demos.main(["--task_id", TASK, "--demos", "6", "--check", "--demos_dir", str(tmp_path)]) == 2
    assert "holds 5 demos, not the 6 asked" in capsys.readouterr().err


def test_a_store_made_before_targets_stays_readable_and_aux_target_refuses_it(tmp_path, fake_bot):
    """A store whose manifest has no "targets" nor "subgoals" (made before they were recorded): its
    episodes read with target and subgoal None, it is extended without them, and the requests of
    --aux_target_weight and --aux_subgoal_weight refuse it (and an older single-file cache) in one
    line naming the file, before generating anything."""
    old = DemoStore.create(
        bot_demos.store_path(tmp_path, TASK, 0), TASK, demo_seed=0, targets=False, subgoals=False, keys=False
    )
    manifest = json.loads((old.root / MANIFEST).read_text())
    del (
        manifest["targets"],
        manifest["subgoals"],
        manifest["keys"],
        manifest["door_places"],
    )  # as earlier code wrote it
    (old.root / MANIFEST).write_text(json.dumps(manifest))
    old = DemoStore.open(old.root, task_id=TASK)
    old.append([fake_episode(s) for s in (1, 2, 3)], next_candidate=3)
    assert not old.targets and not old.subgoals and not old.keys and not old.door_places and old.verify() == 5
    assert (
        old[0].target is None and old[0].subgoal is None and old[0].key is None and old[0].door_place is None
    )
    buf, meta, _ = bot_demos.load_or_generate_demos(TASK, 5, 0, tmp_path, progress=False)
    assert meta["targets"] is False and len(buf) == 5 and buf.episodes[4].target is None
    chunks = len(json.loads((old.root / MANIFEST).read_text())["chunks"])
    with pytest.raises(BufferError, match="manifest.json' holds no bot targets .*--aux_target_weight"):
        bot_demos.load_or_generate_demos(TASK, 9, 0, tmp_path, progress=False, need_targets=True)
    with pytest.raises(BufferError, match="manifest.json' holds no bot subgoals .*--aux_subgoal_weight"):
        bot_demos.load_or_generate_demos(TASK, 9, 0, tmp_path, progress=False, need_subgoals=True)
    with pytest.raises(BufferError, match="manifest.json' holds no seen-key places .*--aux_key_weight"):
        bot_demos.load_or_generate_demos(TASK, 9, 0, tmp_path, progress=False, need_keys=True)
    with pytest.raises(
        BufferError, match="manifest.json' holds no seen-door places .*--aux_door_place_weight"
    ):
        bot_demos.load_or_generate_demos(TASK, 9, 0, tmp_path, progress=False, need_door_places=True)
    assert len(json.loads((old.root / MANIFEST).read_text())["chunks"]) == chunks  # nothing generated
    cache, info = bot_demos.generate_demos(TASK, 2, 1, progress=False)
    cache.save(bot_demos.demo_path(tmp_path, TASK, 2, 1), kind="demos", **info)
    with pytest.raises(BufferError, match="older demo cache: it holds no bot targets"):
        bot_demos.load_or_generate_demos(TASK, 2, 1, tmp_path, progress=False, need_targets=True)
    with pytest.raises(BufferError, match="older demo cache: it holds no bot subgoals"):
        bot_demos.load_or_generate_demos(TASK, 2, 1, tmp_path, progress=False, need_subgoals=True)
    with pytest.raises(BufferError, match="older demo cache: it holds no seen-key places"):
        bot_demos.load_or_generate_demos(TASK, 2, 1, tmp_path, progress=False, need_keys=True)
    with pytest.raises(BufferError, match="older demo cache: it holds no seen-door places"):
        bot_demos.load_or_generate_demos(TASK, 2, 1, tmp_path, progress=False, need_door_places=True)


def test_a_target_store_refuses_an_episode_without_targets_and_a_bad_target_file(tmp_path):
    store, eps = small_store(tmp_path)
    bare = fake_episode(9)
    bare.target = None
    with pytest.raises(DemoStoreError, match="stores bot targets: an episode has none"):
        store.append([bare], next_candidate=9)
    assert len(DemoStore.open(tmp_path / "s")) == 7  # the failed append committed nothing
    f = tmp_path / "s" / "c00000.target.npy"
    np.save(f, np.zeros((store.manifest["chunks"][0]["frames"], 2), np.int16))  # wrong dtype
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    manifest["chunks"][0]["files"]["target"].update(bytes=f.stat().st_size, sha256=_sha(f))
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DemoStoreError, match="c00000.target.npy' has the wrong dtype or shape"):
        DemoStore.open(tmp_path / "s").verify()


def test_real_bot_targets_are_where_the_bot_heads():
    """A real bot demo's targets, mapped back from the agent's frame (agent + ahead x dir_vec +
    right x right_vec), are the cell of the bot's GoNextTo subgoal at that step: its object's, its
    position, or one of the objects its description matches; NO_TARGET on every other step."""
    from mop.babyai_env import SafeBot, make_env, quiet_reset

    buf, _ = bot_demos.generate_demos("BabyAI-Unlock-v0", 4, 0, progress=False)
    env, checked = make_env("BabyAI-Unlock-v0"), 0
    for ep in buf.episodes:
        assert ep.target is not None and ep.target.shape == (len(ep), 2) and ep.target.dtype == np.int8
        quiet_reset(env, ep.seed)
        bot, previous = SafeBot(env), None
        for t, label in enumerate(ep.label.tolist()):
            assert bot.label(previous) == label
            top = bot.bot.stack[-1]
            if type(top).__name__ != "GoNextToSubgoal":
                assert ep.target[t].tolist() == [NO_TARGET, NO_TARGET]
            else:
                ahead, right = ep.target[t].tolist()
                cell = (
                    env.unwrapped.agent_pos + ahead * env.unwrapped.dir_vec + right * env.unwrapped.right_vec
                )
                datum = top.datum
                if hasattr(datum, "obj_set"):
                    assert tuple(cell) in [tuple(p) for p in datum.obj_poss]
                else:
                    assert tuple(cell) == tuple(getattr(datum, "cur_pos", datum))
                checked += 1
            env.step(label)
            previous = label
    assert checked > 100


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_generation_killed_by_sigkill_resumes_with_no_lost_or_duplicated_demo(tmp_path):
    """A real kill -9 of demos.py's generation between commits: the resumed store equals an
    uninterrupted one episode for episode."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = (
        "import sys; from mop import bot_demos as b; import time\n"
        "real = b.DemoStore.append\n"
        "def slow(self, *a, **k):\n"
        "    real(self, *a, **k); print('committed', len(self), flush=True); time.sleep(0.5)\n"
        "b.DemoStore.append = slow\n"
        f"s = b.open_store({str(tmp_path / 'k')!r}, {TASK!r}, 0, create=True)\n"
        "b.extend_store(s, 40, progress=False, chunk_episodes=4)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("committed 8"):
            break
    time.sleep(0.2)  # inside the next chunk's generation
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = bot_demos.open_store(tmp_path / "k", TASK, 0)
    assert 8 <= len(store) < 40
    bot_demos.extend_store(store, 12, progress=False, chunk_episodes=4)
    whole = bot_demos.open_store(tmp_path / "w", TASK, 0, create=True)
    bot_demos.extend_store(whole, 12, progress=False, chunk_episodes=4)
    store = bot_demos.open_store(tmp_path / "k", TASK, 0)
    assert len(store) >= 12 and store.verify()
    assert all(store[i].equals(whole[i]) for i in range(12))
    assert [store[i].seed for i in range(len(store))] == [demo_episode_seed(0, k) for k in range(len(store))]
