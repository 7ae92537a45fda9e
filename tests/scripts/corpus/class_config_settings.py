"""Settings the class_config corpus script imports and changes as it runs."""

LR = 0.1
DECAYS = []
