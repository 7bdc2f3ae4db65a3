"""The RL stage of the recipe: one iteration's object, its schedule (``kimi_rl.rl.schedule``)."""
