"""Inputs: finding images, decoding them, and turning them into model tensors."""
