"""The rl-mop library: everything the stage scripts, notebooks and `modal_app.py` at the top import.

Nothing here is run directly; every command a user runs is a file at the top of the repository. The
package imports nothing from the top but the shared policy module (`mixture_of_experts.py`), so no
stage can be pulled in by a library import. Modules, from the ground up: `runs` (run folders, atomic
writes, locks, path safety; torch-free), `fast_grid` and `babyai_env` (levels, seeds, observations,
the bot), `language` (mission encoders), `experiment` (config schema, checkpoints, metrics),
`numpy_policy` and `collection` (the acting step and the collector), `replay_buffer` and `imitation`
(the training loop), `routing_cache` and `routing_analysis` (the cache schema and its numbers), the
figure modules (`plot_style`, `results_plots`, `stats_plots`, `lmc_plots`, `generative_plots`) and
`generative` (the generative model of rollouts).
"""
