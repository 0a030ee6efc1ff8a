"""`python -m storyworld study`: every aggregation mode on the storyboard world, over seeds.

The design is fixed in `StudyDesign` (data, CLIPs, settings) before any result is seen;
every mode gets the same settings. Modules by job: `design` (the design and its grid of
runs), `clips` (each world CLIP made ready), `runner` (`run_study`, resumable), `collect`
(the records into results), `report` (README.md and plots), with `analysis` (statistics)
and `tpp_groups` (the TPP test's sub-text groups). Steps, each resumable (a rerun skips
what is done):

1. write the storyboard world (`storyworld/world/`);
2. per world-CLIP objective (`pooled`, `pooled+tokens`, see `storyworld/pretrain.py`):
   pre-train the CLIP, measure how often test frames find their action's caption by pooled
   embeddings and by word tokens, keep sub-text sets by TPP (`complement`, and which kind of
   set `identity` would keep), cache the frozen frame features of the seen and unseen
   classes;
3. references on the cached features: the frozen CLIP's zero-shot (mean-pooled frames
   against the class texts) and a linear probe on mean-pooled frames (what bag-of-frames
   can reach);
4. per objective, mode, setting (2-shot, supervised) and seed: train the head on the cache
   (`trainer run --freeze-backbone --features`), then assess the last checkpoint: seen
   top-1, top-1 on the classes of order-only pairs, zero-shot top-1 on the unseen classes,
   and the share of the frame importance that lands on frames of the video's own actions;
5. a temperature sweep (tau_coarse = tau_fine) and a temporal-transformer reference
   (supervised, every seed), and one fine-tuned-backbone supervised run per mode (seed 0);
6. `results.json`, plots with error bars and `README.md` in the docs folder.

Issue 22 adds, fixed before its results: temperatures calibrated on the frozen CLIP to
the paper's Table 6 (`analysis.calibrate`) and the mode grid at that pair beside tau = 0.01; 2-shot
over 10-25 episodes by a sequential rule (`next_episode_count`) with paired differences;
and the paper's TPP-accuracy test, supervised `coarse+fine` per sub-text group
(`tpp_groups.py`, `clips.prepare_groups`). The runs go in phases over both CLIPs
(`run_study`): the pre-registered grid first, the extra episodes, then the references.

Issue 31 adds, fixed before its results: 140 test videos per class; two runs at once
(`runner.training_pool`); the Fig. 2(b) test over 32 random sub-text groups drawn item by
item (`tpp_groups.random_groups`, Spearman's rho with a permutation p-value and a seed
bootstrap, `analysis.rank_correlation_test`); top-1 against the number of sub-texts (Fig.
2(a), `tpp_groups.count_groups`); Table 6's key-frame claim per video; 900-step runs; and
each part's git commit (`collect.provenance`).

Nothing is picked by test score: every number is the last checkpoint's.
"""
