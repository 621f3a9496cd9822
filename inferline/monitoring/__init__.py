"""Watching models in production: metrics, logs, payloads, drift, quality, alerts."""
