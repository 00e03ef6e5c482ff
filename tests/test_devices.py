"""Devices (issue 33): the device setting and its one-line errors, the learner and evaluation on
their device, device-free checkpoints (a file that names CUDA storages loads and resumes on the
CPU), the bench on a CPU-only machine. Tests marked `gpu` need CUDA: conftest skips them with a
reason where torch sees none, so they are written here and run on a GPU machine."""

import dataclasses
import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import batch_eval
import eval_mop
import lmc
import record
import train_generative
import train_mop
from conftest import TINY_PRESET, tiny_config
from mixture_of_experts import build_policy
from mop import collection, devices
from mop.babyai_env import encode_obs
from mop.collection import MissionCache, ObsBatch, ParallelCollector, act, acting_step, on_cpu
from mop.devices import DeviceError, check_device, resolve_device, to_cpu
from mop.experiment import (
    ConfigError,
    cli_main,
    config_changes,
    load_checkpoint,
    load_config,
    load_policy,
    recipe_keys,
    resume_config,
)
from mop.imitation import Learner, TrainState, checkpoint_payload
from mop.language import build_mission_encoder

ROOT = Path(__file__).resolve().parent.parent
TASK = "BabyAI-GoToRedBallGrey-v0"


def fake_gpus(monkeypatch, count: int) -> None:
    """This machine as one with `count` CUDA devices, for the checks made before any is used."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# ----------------------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    "spec, canonical", [("auto", "auto"), ("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:1", "cuda:1")]
)
def test_device_spellings(spec, canonical):
    assert check_device(spec) == canonical


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cuda0", "mps", "", None, 0, "cuda:-1"])
def test_an_unknown_device_string_is_one_line(spec):
    with pytest.raises(DeviceError, match=r"^--device must be auto, cpu, cuda or cuda:N, got ") as info:
        check_device(spec)
    assert "\n" not in str(info.value)


def test_resolution_on_machines_with_none_one_and_two_gpus(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match=rf"^--device {spec}: this machine has no CUDA device"):
            resolve_device(spec)
    fake_gpus(monkeypatch, 1)
    assert (
        resolve_device("auto")
        == resolve_device("cuda")
        == resolve_device("cuda:0")
        == torch.device("cuda", 0)
    )
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^--device cuda:7: this machine has 1 CUDA device \(cuda:0\)$"):
        resolve_device("cuda:7")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_device_is_a_checked_execution_key_outside_the_recipe():
    assert load_config(None).device == "auto" == load_config(ROOT / "config.yaml").device
    cfg = load_config(None, {"device": "CUDA:1"})  # the spelling only: valid on a machine without one
    assert cfg.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"^device must be auto, cpu, cuda or cuda:N, got 'gpu'$"):
        load_config(None, {"device": "gpu"})
    assert "device" not in recipe_keys(cfg)
    assert config_changes(recipe_keys(load_config(None)), {**recipe_keys(cfg), "device": "cpu"}) == []


def test_to_cpu_keeps_the_nesting_and_does_not_copy_cpu_tensors():
    t = torch.ones(3)
    Pair = dataclasses.make_dataclass("Pair", ["a"])  # not a container: left alone
    obj = {"a": [t, (t, 1)], "b": {"c": t}, "d": "x", "e": Pair(t)}
    out = to_cpu(obj)
    assert out["a"][0] is t and out["a"][1][0] is t and out["b"]["c"] is t
    assert isinstance(out["a"][1], tuple) and out["a"][1][1] == 1 and out["d"] == "x" and out["e"] is obj["e"]


# ----------------------------------------------------------------------------- bad input, every stage


def _stage_commands(tmp: Path) -> dict:
    """Each stage with --device, run in-process; every path is under tmp (nothing may appear)."""

    def train(device: str) -> None:
        argv = ["train_mop.py", "--config", str(TINY_PRESET), "--checkpoint_dir", str(tmp / "ck")]
        sys.argv = [*argv, "--device", device]
        cli_main(train_mop.main, "train")

    return {
        "train_mop": train,
        "eval_mop": lambda d: eval_mop.main(
            ["--checkpoint", str(tmp / "x.pt"), "--cache_dir", str(tmp / "cache"), "--device", d]
        ),
        "batch_eval": lambda d: batch_eval.main(
            [
                "--checkpoint_dir",
                str(tmp),
                "--results_path",
                str(tmp / "r.csv"),
                "--cache_dir",
                str(tmp / "c"),
            ]
            + ["--device", d]
        ),
        "record": lambda d: record.main(
            ["--checkpoint", str(tmp / "x.pt"), "--out", str(tmp / "rec"), "--device", d]
        ),
        "train_generative": lambda d: train_generative.main(
            ["--dataset", str(tmp / "rec"), "--out", str(tmp / "gen"), "--device", d]
        ),
        "lmc": lambda d: lmc.main(
            ["--config", str(TINY_PRESET), "--num_updates", "100", "--seed", "0"]
            + ["--results_root", str(tmp / "lmc"), "--device", d]
        ),
    }


@pytest.mark.parametrize(
    "stage", ["train_mop", "eval_mop", "batch_eval", "record", "train_generative", "lmc"]
)
@pytest.mark.parametrize(
    "gpus, device, message",
    [
        (0, "cuda", "this machine has no CUDA device"),
        (1, "cuda:7", "this machine has 1 CUDA device (cuda:0)"),
        (0, "gpu", "must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_and_nothing_is_written(
    stage, gpus, device, message, tmp_path, monkeypatch, capsys
):
    fake_gpus(monkeypatch, gpus)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(SystemExit) as info:
        _stage_commands(work)[stage](device)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(work.iterdir()) == []


# ----------------------------------------------------------------------------- the learner


def test_the_learner_lives_on_its_device_and_its_payload_is_device_free(tmp_path):
    cfg = tiny_config(tmp_path, device="cpu")
    learner = Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), None)
    assert learner.device == torch.device("cpu")
    assert all(p.device == learner.device for p in learner.params)
    payload = checkpoint_payload(learner, TrainState.start(cfg, None))
    assert payload["device"] == "cpu"
    # on the CPU the payload holds the live tensors, not copies (as before devices existed)
    assert payload["policy_state_dict"]["head.weight"].data_ptr() == learner.policy.head.weight.data_ptr()


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_a_bf16_learner_says_so_before_it_starts_where_bf16_is_slow(
    tmp_path, monkeypatch, capsys, native, precision
):
    # an AVX2-only CPU runs autocast's bf16 ~14x slower than float32: a run of hours says so at its start
    monkeypatch.setattr(devices, "native_bf16", lambda device: native)
    cfg = tiny_config(tmp_path, device="cpu", learner_precision=precision)
    Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), None)
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning: learner_precision bfloat16")]
    assert len(warned) == (precision == "bfloat16" and not native)
    if warned:
        assert "--learner_precision float32" in warned[0] and "slower than float32" in warned[0]
        assert torch.backends.cpu.get_cpu_capability() in warned[0]


def test_native_bf16_is_torchs_own_test_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert devices.native_bf16(torch.device("cpu")) is False
    assert devices.bf16_warning(torch.device("cpu")).startswith("warning: ")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert devices.native_bf16(torch.device("cpu")) is True
    assert devices.bf16_warning(torch.device("cpu")) is None


@pytest.mark.parametrize("major", [7, 8])
def test_native_bf16_on_cuda_is_the_devices_own_architecture_not_emulation(monkeypatch, major):
    # torch.cuda.is_bf16_supported() says True on a V100 too (emulated, slow): the learner's device decides
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    assert devices.native_bf16(torch.device("cuda:1")) is (major >= 8)
    warning = devices.bf16_warning(torch.device("cuda:1"))
    assert (warning is None) is (major >= 8)
    if warning:
        assert "cuda:1" in warning and "--learner_precision float32" in warning


def _policy_and_encoder(seed: int = 0):
    torch.manual_seed(seed)
    config = {
        "input_dim": 985,
        "lang_dim": 8,
        "intermediate_dim": 16,
        "expert_hidden_sizes": [[0, 8, 16], [0, 8]],
        "router_hidden_size": 8,
        "num_actions": 7,
        "input_encoder": "bilinear",
    }
    return build_policy(config).eval(), build_mission_encoder("bow", 8).eval(), config


def test_in_process_collection_of_a_gpu_learner_acts_with_cpu_copies(monkeypatch):
    """A learner on a GPU (its device mocked here) collects in-process with CPU copies of its
    modules, as the workers do; the chunk is the one its own CPU modules would collect."""
    policy, encoder, _ = _policy_and_encoder()

    def chunk_of(learner_device: str) -> dict:
        learner = {id(policy), id(encoder)}
        real = collection.module_device
        monkeypatch.setattr(
            collection,
            "module_device",
            lambda m: torch.device(learner_device) if id(m) in learner else real(m),
        )
        with ParallelCollector(TASK, 3, 1, 0, None, "onehot", None, None) as collector:
            chunk = collector.collect(policy, encoder, 6)
            copies = collector.cpu_actor
        monkeypatch.setattr(collection, "module_device", real)
        return chunk, copies

    on_the_cpu, none = chunk_of("cpu")
    on_a_gpu, copies = chunk_of("cuda")
    assert none is None and copies is not None and copies[0] is not policy
    for key in ("image", "label", "done", "mission_index"):
        assert np.array_equal(on_the_cpu[key], on_a_gpu[key]), key
    assert torch.equal(on_the_cpu["memory"], on_a_gpu["memory"])


def test_the_device_step_brings_one_step_back_in_one_piece_and_matches_numpy():
    policy, encoder, _ = _policy_and_encoder()
    rng = np.random.default_rng(0)
    batch = ObsBatch(
        rng.integers(0, 6, (4, 7, 7, 3)).astype(np.uint8),
        rng.integers(0, 4, 4),
        rng.integers(0, 2, 4).astype(np.uint8),
        ["go to the red ball", "open the door"] * 2,
    )
    memory = torch.randn(4, policy.memory_size)
    out = act(policy, MissionCache(encoder), batch, memory, "onehot")
    back = on_cpu(out)
    assert torch.equal(back.logits, out.logits) and torch.equal(back.memory, out.memory)
    assert [torch.equal(a, b) for a, b in zip(back.router_weights, out.router_weights)] == [True, True]
    numpy_step = acting_step(policy, MissionCache(encoder), "onehot")(batch, memory)
    torch.testing.assert_close(numpy_step.logits, back.logits, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- checkpoints on any machine


def cuda_tagged_copy(source: Path, target: Path, monkeypatch, **changes) -> None:
    """Save `source` again as a GPU run writes it: every storage tagged 'cuda:0' (torch records
    each storage's device in the file, and loads it there unless told otherwise)."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    ckpt["config"] = {**ckpt["config"], **changes}
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, target)


def test_a_checkpoint_saved_with_cuda_storage_tags_loads_on_the_cpu_without_a_word(
    tiny_run, tmp_path, monkeypatch, capsys
):
    source = tiny_run.run_dir / "checkpoint_final.pt"
    tagged = tmp_path / "checkpoint_final.pt"
    cuda_tagged_copy(source, tagged, monkeypatch, device="cuda")
    fake_gpus(monkeypatch, 0)  # this machine lacks the device the file names
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(tagged, weights_only=True)  # the file really names cuda:0
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt = load_checkpoint(tagged)
        policy, _, _ = load_policy(tagged)
        result = eval_mop.evaluate(tagged, eval_mop.EvalOptions(num_episodes=3, num_envs=3, record=False))
    assert capsys.readouterr() == ("", "")
    assert {t.device.type for t in ckpt["policy_state_dict"].values()} == {"cpu"}
    reference, _, _ = load_policy(source)
    for a, b in zip(reference.state_dict().values(), policy.state_dict().values()):
        assert torch.equal(a, b)
    expected = eval_mop.evaluate(source, eval_mop.EvalOptions(num_episodes=3, num_envs=3, record=False))
    assert result.metrics["success_rate"] == expected.metrics["success_rate"]
    assert result.metrics["device"] == "cpu"


def _train(directory: Path, updates: int, resume: bool = False, **overrides) -> dict:
    settings = {"num_updates": updates, "checkpoint_interval": None, **overrides}
    cfg = (
        resume_config(TINY_PRESET, {"checkpoint_dir": str(directory), **settings})
        if resume
        else tiny_config(directory, **settings)
    )
    return train_mop.main(cfg, resume=resume, progress=False)


def test_a_run_trained_on_a_gpu_resumes_here_as_from_a_cpu_checkpoint(tmp_path, monkeypatch):
    """Resume across devices, mocked through map_location: a checkpoint whose storages and config
    say CUDA resumes on this CPU, with this invocation's device, to the same numbers as the same
    checkpoint written on the CPU; asking for CUDA here is one line and changes nothing."""
    fake_gpus(monkeypatch, 0)
    runs = {}
    for name in ("cpu", "gpu"):
        runs[name] = Path(_train(tmp_path / name, 3)["run_dir"])
    final = runs["gpu"] / "checkpoint_final.pt"
    cuda_tagged_copy(final, final, monkeypatch, device="cuda")
    before = sorted(p.name for p in runs["gpu"].iterdir())
    with pytest.raises(ConfigError, match="no CUDA device"):
        _train(tmp_path / "gpu", 6, resume=True, device="cuda")
    assert sorted(p.name for p in runs["gpu"].iterdir()) == before
    for name in ("cpu", "gpu"):
        _train(tmp_path / name, 6, resume=True)  # config.yaml's device (auto): the CPU here
    weights = {}
    for name, directory in runs.items():
        ckpt = torch.load(directory / "checkpoint_final.pt", weights_only=True)  # CPU storages only
        assert ckpt["update"] == 6 and ckpt["config"]["device"] == "auto" and ckpt["device"] == "cpu"
        weights[name] = ckpt["policy_state_dict"]
        assert json.loads((directory / "config.json").read_text())["device"] == "auto"
    for key, value in weights["cpu"].items():
        assert torch.equal(value, weights["gpu"][key]), key


def test_evaluation_through_the_device_step_gives_the_numpy_steps_numbers(tiny_run, monkeypatch):
    """On the CPU, --device cpu is the default here; the torch step a GPU policy takes (forced on the
    CPU by leaving numpy out) plays the same episodes, its logits equal to float rounding."""
    checkpoint = tiny_run.run_dir / "checkpoint_final.pt"
    options = eval_mop.EvalOptions(num_episodes=6, num_envs=3)
    base = eval_mop.evaluate(checkpoint, options)
    cpu = eval_mop.evaluate(checkpoint, dataclasses.replace(options, device="cpu"))
    monkeypatch.setattr(collection, "NumpyPolicy", SimpleNamespace(of=lambda *args: None))
    torch_step = eval_mop.evaluate(checkpoint, options)
    for other in (cpu, torch_step):
        same = {k: v for k, v in other.metrics.items() if k != "evaluated_at"}
        assert same == pytest.approx(
            {k: v for k, v in base.metrics.items() if k != "evaluated_at"}, nan_ok=True
        )
        assert other.episodes[["episode", "length", "success"]].equals(
            base.episodes[["episode", "length", "success"]]
        )
    logits = [c for c in base.steps.columns if c.startswith("logit_")]
    np.testing.assert_allclose(torch_step.steps[logits], base.steps[logits], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_bench_runs_on_a_cpu_only_machine(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import learner_throughput

    fake_gpus(monkeypatch, 0)
    args = ["--recipes", "default", "--task", TASK, "--num_envs", "2", "--unroll_len", "4"]
    summary = learner_throughput.main([*args, "--updates", "1", "--e2e_updates", "1", "--workers", "1"])
    out = capsys.readouterr().out
    assert summary["device"] == "no CUDA device: CPU only" and "no CUDA device: CPU only" in out
    (result,) = summary["results"]
    assert result["learner_cpu"] > 0 and "learner_device" not in result and "e2e_device" not in result
    assert 0 <= result["e2e_cpu"]["collection_share"] <= 1 and "bound by" in out


# ----------------------------------------------------------------------------- on a GPU (marked gpu)

TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # CPU vs CUDA logits, float32 without TF32 (docs/reference.md)


@pytest.mark.gpu
def test_a_real_training_step_and_run_on_cuda(tmp_path):
    cfg = tiny_config(tmp_path, device="cuda")
    learner = Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), None)
    with ParallelCollector(TASK, 4, 1, 0, None, "onehot", None, None) as collector:
        chunk = collector.collect(learner.policy, learner.encoder, 8)
    parts = learner.step(chunk)
    assert np.isfinite(parts["train/loss"]) and {p.device.type for p in learner.params} == {"cuda"}
    assert {s.device.type for st in learner.optimizer.state.values() for s in st.values() if s.dim()} == {
        "cuda"
    }
    summary = train_mop.main(cfg, progress=False)
    ckpt = torch.load(summary["checkpoints"][-1], weights_only=True)
    assert ckpt["device"].startswith("cuda:0")
    assert {t.device.type for t in ckpt["policy_state_dict"].values()} == {"cpu"}  # device-free


@pytest.mark.gpu
def test_same_seed_same_numbers_on_cuda(tmp_path):
    rows = []
    for name in ("a", "b"):
        summary = train_mop.main(tiny_config(tmp_path / name, device="cuda"), progress=False)
        rows.append([json.loads(line) for line in Path(summary["metrics_path"]).read_text().splitlines()])
    keep = [k for k in rows[0][-1] if k.startswith(("train/", "routing/"))]
    same = [json.dumps([[r[k] for k in keep] for r in run]) for run in rows]  # NaN reads as NaN
    assert same[0] == same[1]


@pytest.mark.gpu
@pytest.mark.parametrize(
    "sizes", [None, {"expert_hidden_sizes": [[32, 64, 128], [64, 128, 256]], "intermediate_dim": 256}]
)
def test_cpu_and_cuda_logits_of_one_checkpoint_agree_within_the_tolerance(tiny_run, sizes):
    if sizes is None:
        policy, encoder, config = load_policy(tiny_run.run_dir / "checkpoint_final.pt")
    else:  # seed 002's sizes, freshly initialised
        torch.manual_seed(0)
        config = {
            **load_policy(tiny_run.run_dir / "checkpoint_final.pt")[2],
            **sizes,
            "router_hidden_size": 64,
        }
        policy, encoder = build_policy(config).eval(), build_mission_encoder("bow", config["lang_dim"]).eval()
    rng = np.random.default_rng(0)
    T, B = 64, 16
    image = torch.from_numpy(rng.integers(0, 6, (T, B, 7, 7, 3)).astype(np.uint8))
    direction, carrying = torch.from_numpy(rng.integers(0, 4, (T, B))), torch.zeros(T, B, dtype=torch.uint8)
    done = torch.from_numpy(rng.random((T, B)) < 0.05)
    outs = []
    for device in ("cpu", "cuda"):
        p, e = policy.to(device), encoder.to(device)
        with torch.no_grad():
            obs = encode_obs(
                image.to(device), direction.to(device), carrying.to(device), config["obs_encoding"]
            )
            lang = e(["go to the red ball"] * B).unsqueeze(0).expand(T, -1, -1)
            out = p.forward_sequence(obs, lang, p.init_memory(B, device), done.to(device))
        outs.append(out.logits.cpu())
    torch.testing.assert_close(outs[1], outs[0], **TOLERANCE)


@pytest.mark.gpu
def test_evaluation_batches_its_envs_on_the_device(tiny_run):
    checkpoint = tiny_run.run_dir / "checkpoint_final.pt"
    options = eval_mop.EvalOptions(num_episodes=6, num_envs=3)
    on_gpu = eval_mop.evaluate(checkpoint, dataclasses.replace(options, device="cuda"))
    on_cpu_ = eval_mop.evaluate(checkpoint, dataclasses.replace(options, device="cpu"))
    assert on_gpu.metrics["device"].startswith("cuda:0") and len(on_gpu.episodes) == 6
    policy, encoder, config = load_policy(checkpoint)
    batch = ObsBatch(
        np.zeros((3, 7, 7, 3), np.uint8),
        np.zeros(3, np.int64),
        np.zeros(3, np.uint8),
        ["go to the red ball"] * 3,
    )
    memory = torch.zeros(3, policy.memory_size)
    numpy_out = acting_step(policy, MissionCache(encoder), config["obs_encoding"])(batch, memory)
    policy, encoder = policy.cuda(), encoder.cuda()
    gpu_out = acting_step(policy, MissionCache(encoder), config["obs_encoding"])(batch, memory)
    assert gpu_out.logits.device.type == "cpu"  # handed back on the CPU, in one transfer
    torch.testing.assert_close(gpu_out.logits, numpy_out.logits, **TOLERANCE)
    first = on_cpu_.steps.query("t == 0")
    logits = [c for c in first.columns if c.startswith("logit_")]
    np.testing.assert_allclose(
        on_gpu.steps.query("t == 0")[logits].to_numpy(), first[logits].to_numpy(), **TOLERANCE
    )


@pytest.mark.gpu
def test_a_cpu_run_resumes_on_cuda_with_adams_state_moved(tmp_path):
    run_dir = Path(_train(tmp_path, 3)["run_dir"])
    cfg = tiny_config(tmp_path, device="cuda")
    loss = train_mop.make_loss(cfg, cfg.expert_hidden_sizes)
    learner = Learner.build(cfg, "mop", build_policy, loss, load_checkpoint(run_dir / "checkpoint_final.pt"))
    moments = [s for st in learner.optimizer.state.values() for s in st.values() if s.dim()]
    assert moments and {s.device.type for s in moments} == {"cuda"}
    summary = _train(tmp_path, 6, resume=True, device="cuda")
    ckpt = torch.load(summary["checkpoints"][-1], weights_only=True)
    assert ckpt["update"] == 6 and ckpt["device"].startswith("cuda:0")


@pytest.mark.gpu
def test_recording_and_generative_training_on_cuda(tiny_run, tmp_path):
    rec = tmp_path / "rec"
    record.record(tiny_run.run_dir / "checkpoint_final.pt", rec, 4, 2, 40, device="cuda")
    out = tmp_path / "gen"
    argv = ["--dataset", str(rec), "--out", str(out), "--num_init_steps", "2", "--num_sim_steps", "4"]
    argv += ["--hidden_size", "32", "--z_dim", "4", "--no_progress", "--device", "cuda"]
    train_generative.main([*argv, "--num_updates", "2"])
    train_generative.main([*argv, "--num_updates", "3", "--resume", "--device", "cpu"])
    model = torch.load(out / "model_final.pt", weights_only=True)
    assert model["update"] == 3 and {t.device.type for t in model["model_state"].values()} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["bow", "gru", "distilbert"])
def test_every_mission_encoder_runs_on_cuda(kind, request):
    path = request.getfixturevalue("tiny_distilbert") if kind == "distilbert" else "distilbert-base-uncased"
    missions = ["go to the red ball", "open the door on your left", "go to the red ball"]
    out = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)  # the learned encoders' init; DistilBERT's projection has its own seed
        encoder = build_mission_encoder(kind, 8, path).eval().to(device)
        with torch.no_grad():
            out.append(encoder(missions).cpu())
    torch.testing.assert_close(out[1], out[0], **TOLERANCE)
