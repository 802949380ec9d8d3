"""Teachers that write trial-and-execution trajectories for SFT: oracle (toolworld expert with trials), direct
(golden direct execution, the baseline the paper argues against), gold_trials (trials then the gold calls, for
any world whose tasks carry gold calls) and any OpenAI-compatible endpoint."""
