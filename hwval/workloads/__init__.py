"""Workloads hwval runs itself: a small CNN training job on synthetic data (torch)."""
