"""The rl-mop library: everything the stage scripts, notebooks and `modal_app.py` at the top import.

Nothing here is run directly; every command a user runs is a file at the top of the repository. The
package imports nothing from the top but the shared policy module (`mixture_of_experts.py`), so no
stage can be pulled in by a library import. Modules, from the ground up: `checks` (ConfigError and the number rules), `runs` (run folders, atomic
writes, the run lock, path safety; torch-free), `fast_grid` and `babyai_env` (levels, seeds,
observations, the bot), `bot_paths` (the cache of the bot's path lengths), `language` (mission
encoders), `devices` (the device setting, device-free saved state, CUDA's deterministic mode),
`heap` (the process's resident memory; glibc's free pages handed back, so a long run stays flat),
`experiment`, `metrics_log` and `legacy_config` (config schema, checkpoints, metrics; the earlier system's
`input_dim` and checkpoints), `numpy_policy` and `collection` (the
acting step and the collector), `replay_buffer`, `bot_demos`, `imitation_data` and `imitation` (the training loop,
its data, and where a run stands), `results` (the results table), `routing_cache` and `routing_analysis` (the cache schema
and its numbers), `phases`, `conditions`, `inference`, `contrasts` and `difficulty` (phase systems; a run's
condition; statistics across runs; paired contrasts; multi-task difficulty), `causal` (interventions' effects
beside routing, runs as units), `lmc_settings`
`lmc_experiment`, `lmc_stats` and `connectivity` (linear mode connectivity: settings, an
experiment's identity, its statistics, interpolation, barriers, routing agreement),
the figure modules (`plot_style`, `results_plots`, `stats_plots`, `lmc_plots`, `generative_plots`,
`behaviour_plots`, `expert_maps`, `attribution_plots`, `causal_plots`, and `level_image` for the example layout)
`generative` and `generative_probes` (the generative model of rollouts and its calibrated probes),
`attribution` (integrated gradients through the recurrence, its toy and checks), `launch` (a Modal launch checked locally),
`notebook_script` (a notebook's refusal of a file, its --help) and `progress` (the bars of long stages).
"""
