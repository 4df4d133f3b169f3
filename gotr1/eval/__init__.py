"""Evaluation: generate for prompt lists and score every sample into a table (see ``docs/architecture.md``)."""
