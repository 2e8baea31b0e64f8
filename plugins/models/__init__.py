"""Classifier plugins: the paper's networks and Bad GAN's discriminator."""
