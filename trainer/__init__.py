"""rlhf-studio trainer: tokenizer, pretraining, SFT, reward model, PPO, DPO, generation, evaluation.

A library with a CLI (`python -m trainer`); it never imports `app`.
"""
