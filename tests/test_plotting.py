"""plotting_utils: every figure on real caches (tier 2), and the groupings of routing_analysis on
the same caches (the numbers on hand-made tables are in test_analysis.py).

The module fixture trains a tiny MoP on BabyAI-UnlockPickup-v0 with the bot driving (so episodes
contain pickups, door openings and drops), evaluates it with sampled actions and with a knockout,
and does the same for a tiny GRU baseline on BabyAI-GoToRedBallGrey-v0 (no routing columns).
"""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import eval_mop
import plotting_utils as pu
import train
import train_mop
from conftest import runs_off, tiny_config
from mop import plot_style, routing_cache
from mop import results_plots as rp
from mop import routing_analysis as ra
from mop.experiment import read_metrics

# ----------------------------------------------------------------------------- fixtures


def _evaluate(ckpt, root, **kw):
    res = eval_mop.evaluate(ckpt, eval_mop.EvalOptions(sample=True, **kw))
    return res, routing_cache.load_cache(eval_mop.save_evaluation(res, ckpt, root / "cache"))


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Real caches: MoP on UnlockPickup (60 episodes), the same under a knockout, GRU on GoToRedBallGrey."""
    root = tmp_path_factory.mktemp("plotting")
    cfg = tiny_config(
        root / "ck",
        task_id="BabyAI-UnlockPickup-v0",
        unroll_len=16,
        log_interval=2,
        checkpoint_interval=None,
        teacher_forcing=0.9,
        path_ratio_fraction=0.1,
    )
    out = train_mop.main(cfg, progress=False)
    ckpt = out["checkpoints"][-1]
    res, mop = _evaluate(ckpt, root, num_episodes=60)
    knocked, _ = _evaluate(ckpt, root, num_episodes=20, knockout="largest")
    results = pd.DataFrame(
        [
            {
                "checkpoint_path": mop.meta["checkpoint_path"],
                "num_episodes": r.metrics["num_episodes"],
                **r.metrics,
            }
            for r in (res, knocked)
        ]
    )
    gru_cfg = tiny_config(
        root / "ckg",
        unroll_len=16,
        num_updates=4,
        log_interval=2,
        checkpoint_interval=None,
        path_ratio_fraction=0.1,
    )
    gru_out = train.main(gru_cfg, progress=False)
    _, gru = _evaluate(gru_out["checkpoints"][-1], root, num_episodes=12)
    return {
        "mop": mop,
        "gru": gru,
        "results": results,
        "metrics": read_metrics(out["metrics_path"]),
        "gru_metrics": read_metrics(gru_out["metrics_path"]),
        "root": root,
    }


@pytest.fixture(scope="module")
def mop(caches):
    return caches["mop"]


@pytest.fixture(scope="module")
def gru(caches):
    return caches["gru"]


def main_axes(fig: Figure) -> list:
    """Axes that are panels (not colour bars or keys)."""
    return [
        ax
        for ax in fig.axes
        if ax.get_label() and not ax.get_label().startswith(("<colorbar>", "expert_key"))
    ]


def labelled(fig: Figure, prefix: str) -> list:
    return [ax for ax in fig.axes if ax.get_label().startswith(prefix)]


def visited_cells(ax) -> int:
    image = ax.get_images()[0].get_array()
    if np.ma.isMaskedArray(image) and image.ndim == 2:
        return int((~np.ma.getmaskarray(image)).sum())
    return int((np.asarray(image)[..., 3] > 0).sum())


def colorbar_labels(fig: Figure) -> list[str]:
    labels = []
    for ax in fig.axes:
        if ax.get_label() in ("<colorbar>", "expert_key"):
            labels += [ax.get_xlabel(), ax.get_ylabel()]
    return labels


# ----------------------------------------------------------------------------- tier 1: colours and names


def test_constants_and_expert_label():
    assert len(pu.EXPERT_CMAPS) >= 6
    assert len({tuple(np.round(c(1.0), 3)) for c in pu.EXPERT_CMAPS}) == len(pu.EXPERT_CMAPS)
    assert plot_style.expert_label(1, 2, 32) == "layer 1 · 32 units"
    assert plot_style.expert_label(1, 0, 0) == "layer 1 · identity"
    assert plot_style.expert_label(0, 2, None) == "layer 0 · expert 2"
    # Unvisited cells must not look like any expert's weakest shade.
    unvisited = np.array(matplotlib.colors.to_rgb(pu.UNVISITED_COLOR))
    for j in range(6):
        assert np.abs(pu._shade(j, np.array(0.0))[:3] - unvisited).max() > 0.05


# ----------------------------------------------------------------------------- tier 2: groupings on real caches


def test_available_analyses(mop, gru):
    found = ra.get_available_analyses(mop.steps, mop.episodes)
    assert found[0] == "overall"
    assert {"by_key_phase", "by_carrying_phase", "by_door_location", "by_quadrant"} <= set(found)
    assert "by_starting_room" not in found  # UnlockPickup always starts in the left room
    single = ra.get_available_analyses(gru.steps, gru.episodes)
    # GoToRedBallGrey has grey keys as distractors and no door: no key phases, no door grouping.
    assert (
        "by_key_phase" not in single and "by_door_location" not in single and "by_starting_room" not in single
    )
    assert ra.has_routing(mop.steps) and not ra.has_routing(gru.steps)


def test_groups_partition_the_steps(mop):
    for analysis in ra.get_available_analyses(mop.steps, mop.episodes):
        groups = ra.group_routing_data(mop.steps, mop.episodes, analysis)
        assert sum(len(g) for g in groups.values()) == len(mop.steps), analysis
        index = np.concatenate([g.index.to_numpy() for g in groups.values()])
        assert len(np.unique(index)) == len(mop.steps), analysis
        assert all(len(g) for g in groups.values())
    phases = ra.group_routing_data(mop.steps, mop.episodes, "by_key_phase")
    assert list(phases)[0] == "before pickup" and "carrying key" in phases
    assert (phases["carrying key"]["carrying"] == 1).all()
    with pytest.raises(ValueError, match="unknown grouping"):
        ra.group_routing_data(mop.steps, mop.episodes, "by_moon_phase")


# ----------------------------------------------------------------------------- tier 2: figures


def test_overall_routing_figure(mop):
    info = ra.grid_info_for(mop.steps, mop.episodes)
    image = np.zeros((6 * 32, 11 * 32, 3), dtype=np.uint8)
    fig = pu.plot_overall_routing(mop.steps, mop.expert_sizes, image, "pick up the box", grid_info=info)
    assert isinstance(fig, Figure)
    assert [ax.get_label() for ax in main_axes(fig)] == [
        "env_image",
        "routing_layer_0",
        "routing_layer_1",
        "lpc",
    ]
    assert len(labelled(fig, "expert_key")) == 2
    assert "LPC (Σ w·size²)" in colorbar_labels(fig)
    for ax in main_axes(fig)[1:]:
        assert ax.get_xlabel() == "x (cell)" and ax.get_ylabel() == "y (cell)" and ax.get_title()
        assert 0 < visited_cells(ax) < info["grid_width"] * info["grid_height"]  # walls stay unvisited
        bottom, top = ax.get_ylim()
        assert bottom > top  # row 0 at the top, as minigrid draws the level
    # The keys name every expert by its size, per layer.
    key_names = [[t.get_text() for t in k.get_yticklabels()] for k in labelled(fig, "expert_key")]
    assert key_names == [["identity", "8 units", "16 units"], ["identity", "8 units"]]
    assert "pick up the box" in main_axes(fig)[0].get_title()
    assert fig._suptitle is not None and "steps" in fig._suptitle.get_text()


def test_heatmap_cell_values(mop):
    """The LPC image holds each cell's mean LPC at [y, x]."""
    info = ra.grid_info_for(mop.steps, mop.episodes)
    fig = pu.plot_lpc_heatmap(mop.steps, info)
    grid = labelled(fig, "lpc")[0].get_images()[0].get_array()
    x, y = int(mop.steps["x"].iloc[0]), int(mop.steps["y"].iloc[0])
    here = mop.steps[(mop.steps.x == x) & (mop.steps.y == y)]
    assert grid[y, x] == pytest.approx(here["lpc"].mean())
    assert np.ma.getmaskarray(grid)[0, 0]  # a corner wall


def test_grouped_routing_one_row_per_group(mop):
    for analysis in ("by_key_phase", "by_door_location"):
        groups = ra.group_routing_data(mop.steps, mop.episodes, analysis)
        fig = pu.plot_grouped_routing(mop.steps, mop.episodes, analysis, mop.expert_sizes)
        heatmaps = labelled(fig, "routing_layer_")
        assert len(heatmaps) == 2 * len(groups) and len(labelled(fig, "lpc")) == len(groups)
        assert all(visited_cells(ax) > 0 for ax in heatmaps + labelled(fig, "lpc"))
        row_labels = [ax.get_ylabel() for ax in labelled(fig, "routing_layer_0")]
        assert [r.split("\n")[0] for r in row_labels] == list(groups)
    images = {g: np.zeros((10, 10, 3), dtype=np.uint8) for g in groups}
    fig = pu.plot_grouped_routing(
        mop.steps, mop.episodes, "by_door_location", mop.expert_sizes, env_images=images
    )
    assert len(labelled(fig, "env_image")) == len(groups)


def test_behaviour_figures(mop, gru):
    for data in (mop, gru):
        fig = pu.plot_action_frequency(data.steps, by_carrying=True)
        ax = fig.axes[0]
        assert ax.get_ylabel() == "fraction of steps" and [
            t.get_text() for t in ax.get_xticklabels()
        ] == list(ra.ACTION_NAMES)
        heights = [p.get_height() for p in ax.patches]
        assert sum(heights) == pytest.approx(len(ax.get_legend().get_texts()))  # each split sums to 1
        fig = pu.plot_entropy_heatmap(data.steps)
        assert (
            any(t.startswith("policy entropy (nats") for t in colorbar_labels(fig))
            and visited_cells(labelled(fig, "entropy")[0]) > 0
        )
    for reference in ("global", "neighbours"):
        fig = pu.plot_kl_heatmap(mop.steps, reference)
        assert "KL (nats)" in colorbar_labels(fig)
        ax = labelled(fig, f"kl_{reference}")[0]
        assert visited_cells(ax) > 0 and "Jeffreys" in ax.get_title()
    x, y = int(mop.steps.x.iloc[0]), int(mop.steps.y.iloc[0])
    fig = pu.plot_cell_action_distribution(mop.steps, x, y)
    assert f"({x}, {y})" in fig.axes[0].get_title() and len(fig.axes[0].patches) == 14
    with pytest.raises(ValueError, match="never visited"):
        pu.plot_cell_action_distribution(mop.steps, 0, 0)


def test_time_figures(mop):
    episode = ra.pick_example_episode(mop.episodes)
    fig = pu.plot_episode_routing(mop.steps, episode, mop.expert_sizes)
    assert len(fig.axes) == 3  # two layers, then LPC
    assert len(fig.axes[0].get_lines()) >= 3 and fig.axes[-1].get_xlabel() == "step in episode"
    legend_text = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "layer 0 · 16 units" in legend_text and "layer 1 · identity" in legend_text
    events = mop.steps[mop.steps.episode == episode][["t_pick", "t_unlocked", "t_drop"]].max()
    marked = [
        t.get_text() for lg in fig.legends for t in lg.get_texts() if t.get_text() in ra.EVENT_NAMES.values()
    ]
    assert len(marked) == events.notna().sum()
    fig = pu.plot_event_aligned_routing(mop.steps, "t_pick", 5, mop.expert_sizes)
    assert len(fig.axes) == 2
    assert all(ax.get_xlabel() == "steps relative to first pickup" for ax in fig.axes)
    line = fig.axes[1].get_lines()[0]  # layer 1 identity, mean over episodes aligned at the pickup
    when = mop.steps.groupby("episode")["t_pick"].transform("max")
    at_event = mop.steps[mop.steps.t == when]["layer_1_expert_0"].mean()
    assert line.get_ydata()[list(line.get_xdata()).index(0)] == pytest.approx(at_event)
    with pytest.raises(ValueError, match="event must be"):
        pu.plot_event_aligned_routing(mop.steps, "t_moon", 5, mop.expert_sizes)
    no_events = mop.steps.assign(t_unlocked=np.nan)
    with pytest.raises(ValueError, match="no episode"):
        pu.plot_event_aligned_routing(no_events, "t_unlocked", 5, mop.expert_sizes)


def test_distribution_figures(mop):
    fig = pu.plot_weight_histograms(mop.steps, mop.expert_sizes)
    assert len(fig.axes) == 2 and all(ax.get_xlabel() == "router weight" for ax in fig.axes)
    fig = pu.plot_routing_entropy(mop.steps, mop.expert_sizes)
    assert [ax.get_xlabel() for ax in fig.axes] == ["router entropy (nats)"] * 2
    uniform = [ln.get_xdata()[0] for ln in fig.axes[0].get_lines()][0]
    assert uniform == pytest.approx(math.log(3))
    fig = pu.plot_expert_usage(mop.meta["metrics"], mop.expert_sizes)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["layer 0", "layer 1"]
    # The stacked bars of plot_expert_usage are these numbers.
    usage = ra.expert_usage(mop.steps)
    fig = pu.plot_expert_usage(mop.steps, [[0, 8, 16], [0, 8]])
    bars = [p for p in fig.axes[0].patches]
    assert sorted(round(b.get_height(), 6) for b in bars) == sorted(
        round(v, 6) for v in list(usage[0]) + list(usage[1]) + [0.0]
    )


def test_specialisation_figures(mop, caches):
    fig = pu.plot_phase_specialisation(mop.steps, mop.episodes, mop.expert_sizes)
    groups = ra.group_routing_data(mop.steps, mop.episodes, "by_key_phase")
    assert len(fig.axes) == 2
    stars = [t for t in fig.axes[0].texts if t.get_text() == "★"]
    assert len(stars) == len(groups)  # one dominant expert per phase
    with pytest.raises(ValueError, match="not available"):
        pu.plot_phase_specialisation(mop.steps, mop.episodes, mop.expert_sizes, "by_starting_room")
    fig = pu.plot_success_vs_failure(mop.steps, mop.episodes, mop.expert_sizes)
    assert len(fig.axes) == 3 and fig.axes[-1].get_title() == "LPC"
    fig = rp.plot_knockout_comparison(caches["results"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["no knockout", "largest per layer"]
    assert [p.get_height() for p in ax.patches] == pytest.approx(caches["results"]["success_rate"].tolist())
    assert ax.get_ylabel() == "success rate (95% CI)"
    rows = caches["results"].assign(
        knockout=["none", "layer_0:2"], expert_hidden_sizes="[[0, 8, 16], [0, 8]]"
    )
    labels = [t.get_text() for t in rp.plot_knockout_comparison(rows).axes[0].get_xticklabels()]
    assert labels == ["no knockout", "layer 0 · 16 units"]


def test_training_curves(caches):
    fig = rp.plot_training_curves(caches["metrics"], caches["mop"].expert_sizes)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert {"loss", "accuracy vs bot", "recent episodes", "LPC", "layer 0 routing", "layer 1 routing"} <= set(
        titles
    )
    assert all(ax.get_xlabel() == "update" for ax in fig.axes if ax.get_title())
    fig = rp.plot_training_curves(pd.DataFrame(caches["gru_metrics"]))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "loss" in titles and not any(t.startswith("layer") or t == "LPC" for t in titles)


def test_training_curves_show_schedules_only_when_they_change():
    rows = [
        {"update": u, "train/loss": 1.0 / u, "train/lr": 3e-3, "train/teacher_forcing": 0.0}
        for u in range(1, 6)
    ]
    titles = [ax.get_title() for ax in rp.plot_training_curves(rows).axes if ax.get_title()]
    assert "learning rate" not in titles and "teacher forcing" not in titles
    for r in rows:
        r["train/lr"] = 3e-3 - 6e-4 * (r["update"] - 1)  # 3e-3 -> 6e-4
        r["train/teacher_forcing"] = max(0.0, 1.0 - 0.5 * (r["update"] - 1))
    axes = {ax.get_title(): ax for ax in rp.plot_training_curves(rows).axes if ax.get_title()}
    assert axes["learning rate"].get_yscale() == "log"
    assert axes["learning rate"].lines[0].get_ydata().tolist() == pytest.approx([r["train/lr"] for r in rows])
    assert axes["teacher forcing"].get_ylim() == pytest.approx((-0.02, 1.02))


def test_gru_cache_refuses_routing_plots(gru):
    sizes = gru.expert_sizes
    for call in (
        lambda: pu.plot_overall_routing(gru.steps, sizes),
        lambda: pu.plot_grouped_routing(gru.steps, gru.episodes, "by_quadrant", sizes),
        lambda: pu.plot_episode_routing(gru.steps, 0, sizes),
        lambda: pu.plot_weight_histograms(gru.steps, sizes),
        lambda: pu.plot_routing_entropy(gru.steps, sizes),
        lambda: pu.plot_expert_usage(gru.steps, sizes),
        lambda: pu.plot_success_vs_failure(gru.steps, gru.episodes, sizes),
    ):
        with pytest.raises(ValueError, match="GRU-baseline"):
            call()


def test_standard_figures_and_save(caches, tmp_path):
    import matplotlib.pyplot as plt

    mop = caches["mop"]
    figs = pu.standard_figures(mop, np.zeros((64, 64, 3), np.uint8), caches["metrics"], caches["results"])
    expected = {
        "routing_overall", "routing_by_key_phase", "routing_by_carrying_phase", "routing_by_door_location",
        "lpc_overall", "action_frequency", "entropy_heatmap", "kl_global", "weights_histograms",
        "routing_entropy", "expert_usage", "event_aligned_t_pick", "phase_specialisation",
        "success_vs_failure", "training_curves", "knockout_comparison",
    }  # fmt: skip
    assert expected <= set(figs)
    assert any(k.startswith("episode_") and k.endswith("_routing") for k in figs)
    assert all(isinstance(f, Figure) for f in figs.values())
    gru_figs = pu.standard_figures(caches["gru"])
    assert {"action_frequency", "entropy_heatmap", "kl_global"} <= set(gru_figs)
    assert not any(k.startswith(("routing", "lpc", "weights", "expert", "episode_")) for k in gru_figs)
    paths = pu.save_figures(
        {**figs, **{f"gru_{k}": v for k, v in gru_figs.items()}}, tmp_path / "plots", dpi=40
    )
    assert len(paths) == len(figs) + len(gru_figs)
    for p in paths:
        assert p.suffix == ".png" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    assert plt.get_fignums() == []  # nothing left in pyplot's registry
    # The headless command renders the same set (the GRU cache: behaviour figures only), into the
    # cache's layout below plots/.
    import render_plots

    summary = render_plots.main(
        ["--cache", str(caches["gru"].path), "--out", str(tmp_path / "cli"), "--dpi", "40"]
    )
    names = {p.rsplit("/", 1)[1] for p in summary["paths"]}
    # plus the training curves from the run's metrics.jsonl beside the checkpoint
    assert names == {f"{k}.png" for k in gru_figs} | {"training_curves.png"}
    task = caches["gru"].meta["config"]["task_id"]
    assert all(f"/cli/{task}/trial_0/" in p for p in summary["paths"])


def test_cross_task_figures_from_results_rows():
    rows = pd.DataFrame(
        {
            "checkpoint_path": [
                "a/checkpoint_100.pt",
                "a/checkpoint_200.pt",
                "a/checkpoint_final.pt",
                "b/checkpoint_100.pt",
                "a/checkpoint_200.pt",
            ],
            "task_id": ["BabyAI-GoToLocal-v0"] * 3 + ["BabyAI-UnlockPickup-v0", "BabyAI-GoToLocal-v0"],
            "trial": [0, 0, 0, 1, 0],
            "seed": [np.nan] * 5,
            "update": [100, 200, 200, 100, 200],
            "lpc_alpha": [0.0, 0.0, 0.0, 1e-4, 0.0],
            "knockout": ["none", "none", "none", "none", "largest"],
            "eval_task_id": ["BabyAI-GoToLocal-v0"] * 3 + ["BabyAI-UnlockPickup-v0", "BabyAI-GoToLocal-v0"],
            "success_rate": [0.5, 0.9, 0.9, 0.7, 0.2],
            "success_ci_low": [0.4, 0.85, 0.85, 0.6, 0.1],
            "success_ci_high": [0.6, 0.95, 0.95, 0.8, 0.3],
            "mean_lpc": [300.0, 500.0, 500.0, 100.0, 50.0],
        }
    )
    fig = rp.plot_success_vs_lpc(rows)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("lpc_alpha")]
    assert [ax.get_title() for ax in panels] == ["lpc_alpha = 0", "lpc_alpha = 0.0001"]
    assert sum(len(c.lines[0].get_xdata()) for c in panels[0].containers) == 3  # knockout row left out
    fig = rp.plot_metrics_vs_update(rows)
    success_axis = fig.axes[0]
    lines = {line.get_label(): list(line.get_xdata()) for line in success_axis.get_lines()}
    assert lines == {
        "GoToLocal-v0 · t0": [100.0, 200.0],
        "UnlockPickup-v0 · t1": [100.0],
    }  # final deduplicated
    with pytest.raises(ValueError, match="default evaluations"):
        rp.plot_success_vs_lpc(rows[rows["knockout"] == "largest"])


# ----------------------------------------------------------------------------- what a figure says (issue 36)


def bottom_note(fig: Figure) -> str:
    return plot_style.figure_note(fig)


def test_note_goes_under_the_figure_and_joins_a_bottom_legend():
    fig = plot_style.new_figure(4, 3)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="a")
    plot_style.note(fig, "first note.")
    assert bottom_note(fig) == "first note." and [lg.get_label() for lg in fig.legends] == ["note"]
    fig = plot_style.new_figure(4, 3)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="a")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", title="series")
    plot_style.note(fig, "bars: mean ± 1 SEM.")
    plot_style.note(fig, "second line.")
    # One bottom legend (constrained layout stacks nothing at the bottom): the notes, then a blank
    # line, then its title (so the title reads as the entries' heading, not as the note's end).
    assert len(fig.legends) == 1
    assert fig.legends[0].get_title().get_text().split("\n") == [
        "bars: mean ± 1 SEM.",
        "second line.",
        "",
        "series",
    ]
    assert bottom_note(fig) == "bars: mean ± 1 SEM. second line."


def test_layouts_set_the_width():
    fig, axes = plot_style.panel_grid(5, "screen", panel=(3.3, 2.6))
    assert fig.get_figwidth() <= plot_style.SCREEN_WIDTH and len(axes) == 5 == len(fig.axes)
    fig, axes = plot_style.panel_grid(5, "paper", panel=(3.3, 2.6))
    assert fig.get_figwidth() == plot_style.PAPER_WIDTH and len(fig.axes) == 5
    rows = {round(ax.get_position().y0, 3) for ax in axes}
    assert len(rows) == 3  # two columns: 2 + 2 + 1
    assert plot_style.sized_figure(4.3, 3.0, "paper").get_figwidth() == plot_style.PAPER_WIDTH
    with pytest.raises(ValueError, match="layout must be one of"):
        plot_style.panel_grid(2, "poster")


def _metrics_rows(alpha_term: float) -> list[dict]:
    return [
        {
            "update": u,
            "train/loss": 2.0 / u + alpha_term,
            "train/ce": 2.0 / u,
            "train/accuracy": 0.1 * u,
            "train/success_recent": 0.1 * u,
            "episodes/recent_window": 50,
        }
        for u in range(1, 6)
    ]


def test_training_curves_draw_one_loss_line_when_total_is_the_cross_entropy():
    fig = rp.plot_training_curves(_metrics_rows(0.0))
    loss = next(ax for ax in fig.axes if ax.get_title() == "loss")
    assert [line.get_label() for line in loss.get_lines()] == ["total = cross-entropy"]
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["total = cross-entropy"]
    assert "equals the cross-entropy" in bottom_note(fig) and "One run: no interval" in bottom_note(fig)
    assert "last 50 episodes" in bottom_note(fig)
    fig = rp.plot_training_curves(_metrics_rows(0.3))  # an LPC term: both lines, told apart
    loss = next(ax for ax in fig.axes if ax.get_title() == "loss")
    assert [line.get_label() for line in loss.get_lines()] == ["total", "cross-entropy"]
    assert "equals the cross-entropy" not in bottom_note(fig)


def test_training_curves_name_the_experts_once_and_dash_them():
    rows = _metrics_rows(0.0)
    for r in rows:
        r.update(
            {f"routing/layer_{k}/expert_{j}": w for k in (0, 1) for j, w in enumerate((0.98, 0.01, 0.01))}
        )
    fig = rp.plot_training_curves(rows, [[0, 8, 16], [0, 8, 16]])
    routing = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    assert len(routing) == 2 and all(ax.get_legend() is None for ax in routing)
    legend = next(lg for lg in fig.legends if lg.get_title().get_text().endswith("expert (every layer)"))
    assert [t.get_text() for t in legend.get_texts()] == ["identity", "8 units", "16 units"]
    styles = [line.get_linestyle() for line in routing[0].get_lines()]
    assert len(set(styles)) == 3  # the two experts at 0.01 coincide: dashes keep them two lines
    # Layers with different experts: each panel keeps its own legend.
    fig = rp.plot_training_curves(rows, [[0, 8, 16], [0, 4, 32]])
    assert all(ax.get_legend() is not None for ax in fig.axes if ax.get_title().startswith("layer"))


def _by_update(n: int) -> pd.DataFrame:
    from mop.inference import SCALARS

    rows = []
    for m in SCALARS:
        for u in (10, 20):
            ci = (0.2, 0.6) if n > 1 else ("n=1: no inference", "n=1: no inference")
            rows.append(
                {"lpc_alpha": 0.0, "condition": "mop-0", "condition_label": "MoP α=0", "metric": m,
                 "update": u, "n": n, "mean": 0.4, "estimate": 0.4,
                 "ci_low": ci[0], "ci_high": ci[1], "scale": "linear"}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_stats_metrics_vs_update_says_why_there_is_no_band():
    from mop import stats_plots

    fig = stats_plots.plot_metrics_vs_update(_by_update(1))
    assert "95%" not in fig.get_suptitle()  # the title no longer promises an interval
    assert "no interval" in bottom_note(fig) and "n = 1" in bottom_note(fig)
    assert all(not ax.collections or not ax.collections[0].get_paths() for ax in fig.axes[:4])
    fig = stats_plots.plot_metrics_vs_update(_by_update(3))
    assert "95% t interval across the runs" in bottom_note(fig) and "n = 3 runs" in bottom_note(fig)
    fig = stats_plots.plot_metrics_vs_update(_by_update(3), layout="paper")
    assert fig.get_figwidth() == plot_style.PAPER_WIDTH


def test_stats_r_vs_alpha_draws_its_interval_with_one_alpha_and_names_single_runs():
    from mop import stats_plots
    from mop.inference import NO_INFERENCE, SPATIAL

    def frames(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        runs = pd.DataFrame(
            {"lpc_alpha": [0.0] * n, "condition": "mop-0", "condition_label": "MoP α=0", "trial": 0,
             **{f"r_all_{c}": np.linspace(-0.2, 0.4, n) for c in SPATIAL}}
        )  # fmt: skip
        spatial = pd.DataFrame(
            [
                {"phase": "all", "correlation": c, "lpc_alpha": 0.0, "condition": "mop-0", "mean_r": 0.1,
                 "ci_low": -0.3 if n > 1 else NO_INFERENCE, "ci_high": 0.5 if n > 1 else NO_INFERENCE,
                 "p": 0.5 if n > 1 else NO_INFERENCE, "p_fig": 0.5 if n > 1 else np.nan}
                for c in SPATIAL
            ]
        )  # fmt: skip
        return runs, spatial

    fig = stats_plots.plot_r_vs_alpha(*frames(3), ["all"])
    ax = fig.axes[0]
    whiskers = [c for c in ax.containers if c.has_yerr]
    assert len(whiskers) == len(SPATIAL)  # one α: a band has no width, the whisker shows the CI
    segments = whiskers[0].lines[2][0].get_segments()
    assert segments[0][:, 1].tolist() == pytest.approx([-0.3, 0.5])
    assert "95% t interval" in bottom_note(fig) and "Runs per condition: 3." in bottom_note(fig)
    fig = stats_plots.plot_r_vs_alpha(*frames(1), ["all"])
    assert "MoP α=0: one run, no interval" in bottom_note(fig)
    assert "n=1" in [t.get_text() for t in fig.axes[0].texts]


def test_intervals_are_named_on_the_results_figures(caches):
    fig = rp.plot_knockout_comparison(caches["results"])
    assert fig.axes[0].get_ylabel() == "success rate (95% CI)"
    assert "95% Wilson interval" in bottom_note(fig) and "episodes" in bottom_note(fig)
    rows = caches["results"].assign(
        task_id="BabyAI-UnlockPickup-v0",
        eval_task_id="BabyAI-UnlockPickup-v0",
        lpc_alpha=0.0,
        knockout="none",
        sample=False,
    )
    assert "Wilson" in bottom_note(rp.plot_success_vs_lpc(rows))


def test_success_vs_failure_states_its_error_bars_and_a_missing_outcome(mop):
    fig = pu.plot_success_vs_failure(mop.steps, mop.episodes, mop.expert_sizes)
    assert "± 1 SEM over the episodes" in bottom_note(fig)
    outcomes = {"success": mop.episodes["success"].sum(), "failure": (~mop.episodes["success"]).sum()}
    expected = [f"{k} (n={v})" for k, v in outcomes.items() if v]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == expected
    # the confound is said with the numbers: failed episodes are longer
    both = mop.episodes.assign(success=np.arange(len(mop.episodes)) % 2 == 0)
    both = both.assign(length=np.where(both["success"], 10, 64))
    note_text = bottom_note(pu.plot_success_vs_failure(mop.steps, both, mop.expert_sizes))
    assert "Failed episodes are longer (mean 64 vs 10 steps)" in note_text and "confounded" in note_text
    all_failed = mop.episodes.assign(success=False)
    fig = pu.plot_success_vs_failure(mop.steps, all_failed, mop.expert_sizes)
    assert "No success episodes" in bottom_note(fig)
    assert len(fig.axes[0].patches) == len(ra.routing_layers(mop.steps.columns)[0])  # failure bars only


def test_phase_and_event_figures_state_their_error_bars(mop):
    fig = pu.plot_phase_specialisation(mop.steps, mop.episodes, mop.expert_sizes)
    assert "± 1 SEM over those episodes" in bottom_note(fig)
    fig = pu.plot_event_aligned_routing(mop.steps, "t_pick", 5, mop.expert_sizes)
    n = mop.steps[mop.steps["t_pick"].notna()]["episode"].nunique()
    assert f"mean over the {n} episodes" in bottom_note(fig) and "± 1 SEM" in bottom_note(fig)


def test_dominant_heatmaps_carry_each_experts_mean(mop):
    fig = pu.plot_overall_routing(mop.steps, mop.expert_sizes)
    title = labelled(fig, "routing_layer_1")[0].get_title()
    usage = ra.expert_usage(mop.steps)[1]
    assert title.split("\n")[1] == f"mean id {usage[0]:.2f} · 8 {usage[1]:.2f}"


def test_routing_by_expert_shows_each_experts_difference_from_its_mean(mop):
    info = ra.grid_info_for(mop.steps, mop.episodes)
    fig = pu.plot_routing_by_expert(mop.steps, mop.expert_sizes, info)
    panels = labelled(fig, "expert_layer_")
    layers = ra.routing_layers(mop.steps.columns)
    assert len(panels) == sum(len(c) for c in layers.values())  # 3 + 2: one per (layer, expert)
    assert panels[0].get_title() == f"L0 · identity\nmean {mop.steps['layer_0_expert_0'].mean():.2f}"
    limits = {p.get_images()[0].get_clim() for p in panels}
    assert len(limits) == 1 and next(iter(limits))[0] == -next(iter(limits))[1]  # one symmetric scale
    x, y = int(mop.steps["x"].iloc[0]), int(mop.steps["y"].iloc[0])
    here = mop.steps[(mop.steps.x == x) & (mop.steps.y == y)]
    grid = panels[4].get_images()[0].get_array()  # layer 1, 8 units
    col = "layer_1_expert_1"
    assert grid[y, x] == pytest.approx(here[col].mean() - mop.steps[col].mean())
    assert "cell's mean weight − the expert's mean over all steps" in colorbar_labels(fig)


def test_example_layout_is_captioned_and_drawn_step_by_step(mop):
    example = ra.example_layout(mop.episodes)
    assert example.episode == ra.pick_example_episode(mop.episodes)
    assert example.seed == int(mop.episodes.set_index("episode").loc[example.episode, "seed"])
    assert example.n_layouts == len(mop.episodes) and "median length" in example.rule
    figs = pu.standard_figures(mop, np.zeros((64, 64, 3), np.uint8))
    level = labelled(figs["routing_overall"], "env_image")[0].get_title().replace("\n", " ")
    assert f"one example layout of {len(mop.episodes)}: seed {example.seed}" in level
    assert f"episode_{example.episode}_routing" in figs
    assert f"seed {example.seed}" in figs[f"episode_{example.episode}_routing"].get_suptitle()


def test_overall_routing_fits_its_figure_with_one_shared_key_or_a_key_per_layer():
    """config.yaml's experts (one key for every layer: the paper grid's spare cell) and per-layer
    experts (a key under each panel), on synthetic steps: nothing runs off either layout, and the
    shared paper figure keeps compact rows (a per-panel allowance there left empty bands)."""
    rng = np.random.default_rng(0)
    n = 400
    steps = pd.DataFrame(
        {"x": rng.integers(1, 7, n), "y": rng.integers(1, 7, n), "episode": rng.integers(0, 9, n)}
    )
    steps["lpc"] = rng.uniform(200, 400, n)
    for sizes in ([[0, 16, 32]] * 3, [[0, 8, 16], [0, 8]]):
        weights = {}
        for k, layer in enumerate(sizes):
            w = rng.dirichlet(np.ones(len(layer)), n)
            weights |= {f"layer_{k}_expert_{j}": w[:, j] for j in range(len(layer))}
        table = steps.assign(**weights)
        for layout in ("screen", "paper"):
            fig = pu.plot_overall_routing(
                table, sizes, np.zeros((64, 64, 3), np.uint8), "go to the ball", layout=layout
            )
            assert not runs_off(fig), (sizes, layout)
            if layout == "paper" and len(sizes) == 3:
                assert fig.get_figheight() < 2.2 * fig.get_figwidth()  # 3 rows of square panels, no bands


def test_paper_layout_is_one_column_and_screen_fits_a_notebook(caches):
    mop = caches["mop"]
    for layout, check in (
        ("paper", lambda w: w == plot_style.PAPER_WIDTH),
        ("screen", lambda w: w <= plot_style.SCREEN_WIDTH + 1e-9),
    ):
        figs = pu.standard_figures(
            mop, np.zeros((64, 64, 3), np.uint8), caches["metrics"], caches["results"], layout=layout
        )
        widths = {k: f.get_figwidth() for k, f in figs.items()}
        assert all(check(w) for w in widths.values()), widths
        off = {k: [a.get_title() or a.get_label() for a in runs_off(f)] for k, f in figs.items()}
        assert not {k: v for k, v in off.items() if v}, layout  # no label cut off at an edge
        # the same figures in both layouts, panels unchanged
        assert len(labelled(figs["routing_by_expert"], "expert_layer_")) == 5


def test_render_plots_paper_layout_writes_column_wide_pngs(caches, tmp_path):
    import struct

    import render_plots

    summary = render_plots.main(
        ["--cache", str(caches["gru"].path), "--out", str(tmp_path), "--dpi", "40", "--layout", "paper"]
    )
    for path in summary["paths"]:
        width = struct.unpack(">I", open(path, "rb").read()[16:20])[0]  # the PNG header's width
        assert width == round(plot_style.PAPER_WIDTH * 40), path


def test_lmc_midpoint_labels_of_a_forks_pairs_do_not_overlap():
    """The instability figure labels each pair's midpoint drop with its sign test (p, worse/better);
    two pairs of one fork sit 0.012 apart in x, so their labels used to print over each other."""
    from mop.lmc_plots import plot_instability

    rows = []
    for fork, point in enumerate([0.25, 0.5]):
        for pair in range(3):
            row = {"fork": fork, "pair": pair, "fork_point": point, "fork_update": 10 * (fork + 1)}
            for name in ("ce", "success"):
                for form in ("line", "mean"):
                    key = f"{name}_barrier_{form}"
                    row |= {key: 0.01, f"{key}_ci_low": 0.0, f"{key}_ci_high": 0.02}
                row[f"{name}_extreme_line"] = 0.0
            row |= {"midpoint_alpha": 0.5, "success_drop_mid": 0.0, "success_drop_mid_ci_low": 0.0,
                    "success_drop_mid_ci_high": 0.0, "success_drop_mid_n_worse": 0,
                    "success_drop_mid_n_better": 0, "success_drop_mid_p": 1.0}  # fmt: skip
            rows.append(row)
    fig = plot_instability(pd.DataFrame(rows))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in fig.axes[2].texts if t.get_text().startswith("p=")]
    assert len(labels) == 6
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlapping = [(i, j) for i in range(6) for j in range(i + 1, 6) if boxes[i].overlaps(boxes[j])]
    assert overlapping == []
    ylabel = fig.axes[2].yaxis.label.get_window_extent(renderer)
    assert ylabel.y1 <= fig.axes[2].get_window_extent(renderer).y1  # not up into the title


def test_lmc_instability_draws_the_barriers_deciding_interval_not_the_withdrawn_bootstrap():
    """Issue 40: a pair's barrier bar is its simultaneous t interval (calibrated at a true 0), not
    the percentile bootstrap that covered 34% there; the midpoint p is named as the randomisation
    test it is (it was labelled an exact sign test)."""
    from mop.lmc_plots import plot_instability

    row = {"fork": 0, "pair": 0, "fork_point": 0.5, "fork_update": 10, "midpoint_alpha": 0.5}
    for name in ("ce", "success"):
        for form in ("line", "mean"):
            key = f"{name}_barrier_{form}"
            row |= {key: 0.01, f"{key}_ci_low": 0.005, f"{key}_ci_high": 0.015}  # the percentile one
            row |= {f"{key}_t_ci_low": 0.0, f"{key}_t_ci_high": 0.3}  # the one that decides
        row[f"{name}_extreme_line"] = 0.0
    row |= {"success_drop_mid": 0.0, "success_drop_mid_ci_low": -0.1, "success_drop_mid_ci_high": 0.1,
            "success_drop_mid_n_worse": 1, "success_drop_mid_n_better": 1, "success_drop_mid_p": 1.0}  # fmt: skip
    fig = plot_instability(pd.DataFrame([row]))
    for ax in fig.axes[:2]:
        tops = [
            seg[:, 1].max() for c in ax.collections if hasattr(c, "get_segments") for seg in c.get_segments()
        ]
        assert tops and max(tops) == pytest.approx(0.3)  # the t interval's top, not 0.015
    assert "randomisation" in fig.axes[2].get_title() and "sign test" not in fig.axes[2].get_title()
    assert "bootstrap" not in fig._suptitle.get_text()
