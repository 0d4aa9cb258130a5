"""Evaluation: the FID Inception port, FID statistics, and the per-dataset quality metrics
(digits and photo_crops classifiers, SWD; `quality.get_quality_metric`)."""
