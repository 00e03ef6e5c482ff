"""The schedules of an imitation run, each a function of the config and the update alone, so
--resume and LMC forks continue them exactly: the learning rate (lr_at), DAgger's teacher forcing
(teacher_forcing_at) and whether an update trains on the bot demos (offline_update); and where a
--resume may move that switch (check_demo_switch)."""

from __future__ import annotations

from mop.experiment import ConfigError, TrainConfig, recipe_value


def linear_schedule(start: float, final: float | None, decay_updates: int, update: int) -> float:
    """A value at `update` (1-based): linear from `start` at update 1 to `final` at update
    1 + decay_updates, constant after; decay_updates 0 (or final None): `start` throughout."""
    if decay_updates == 0 or final is None:
        return start
    progress = min(max(update - 1, 0) / decay_updates, 1.0)
    return start + (final - start) * progress


def teacher_forcing_at(cfg: TrainConfig, update: int) -> float:
    """DAgger's beta_i: the probability that the bot's label, rather than the
    student's action, is executed, on cfg's schedule (linear_schedule). i counts DAgger's
    updates: after --demo_updates of behavioural cloning the schedule starts at update
    demo_updates + 1 (the demos' updates never act)."""
    return linear_schedule(
        cfg.teacher_forcing,
        cfg.teacher_forcing_final,
        cfg.teacher_forcing_decay_updates,
        update - cfg.demo_updates,
    )


def offline_update(cfg: TrainConfig, update: int) -> bool:
    """Whether `update` trains on the bot demos rather than on live collection: every update of a
    --demos run, the first demo_updates of one that turns to DAgger after them."""
    return bool(cfg.demos) and (not cfg.demo_updates or update <= cfg.demo_updates)


def lr_at(cfg: TrainConfig, update: int) -> float:
    """The learning rate of `update`'s optimizer step, on cfg's schedule (linear_schedule), or
    --dagger_lr for the DAgger updates after --demo_updates. A function of the update alone, so
    --resume and LMC forks continue it exactly."""
    if cfg.dagger_lr is not None and cfg.demo_updates and update > cfg.demo_updates:
        return cfg.dagger_lr
    return linear_schedule(cfg.lr, cfg.lr_final, cfg.lr_decay_updates, update)


def check_demo_switch(saved: dict, update: int, cfg: TrainConfig) -> None:
    """A resume may move demo_updates (the switch from the demos to DAgger) only where the updates
    done were offline under both values: a finished BC run (--demos N, no demo_updates) goes on
    into DAgger with --demo_updates at or after its last update, and a BC phase not yet over may
    end elsewhere. ConfigError in one line when the new value would rewrite what was trained."""
    old = recipe_value(saved, "demo_updates")
    if old == cfg.demo_updates:
        return

    def offline_through(demos: int, demo_updates: int) -> int:  # the last offline update done
        return min(update, demo_updates or update) if demos else 0

    done_offline = offline_through(recipe_value(saved, "demos"), old)
    if done_offline != offline_through(cfg.demos, cfg.demo_updates):
        if done_offline == update:
            past, keep = (
                f"trained offline on its demos through update {update}",
                f"give demo_updates >= {update}",
            )
        else:
            past, keep = f"trained online after update {done_offline}", f"keep demo_updates {old}"
        raise ConfigError(
            f"--resume: demo_updates {cfg.demo_updates} contradicts the run's checkpoint, which {past}: {keep}"
        )
