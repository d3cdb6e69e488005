"""Diffusion-DPO training: the trainer, policy, DPO step, reference strategies, data, checkpoints, exports."""
