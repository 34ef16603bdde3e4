"""Shared machinery: model wrapper, sampler, scopes, trainer, patches, attention control."""
