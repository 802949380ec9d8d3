"""Teachers that write trial-and-execution trajectories for SFT: oracle (expert with trials), direct
(golden direct execution, the baseline the paper argues against) and any OpenAI-compatible endpoint."""
