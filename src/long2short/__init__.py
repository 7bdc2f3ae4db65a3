"""long2short (paper 2.4): merging, shortest rejection sampling, DPO, long2short RL, and their comparison."""
