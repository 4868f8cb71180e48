"""Coordination: update validation, mask-aware aggregation, the Flower strategy and ServerApp."""
