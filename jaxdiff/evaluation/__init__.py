"""Evaluation: the FID Inception port, FID statistics, and the digits quality metric."""
