"""Forget-Me-Not: attention re-steering (Zhang et al. 2023)."""
