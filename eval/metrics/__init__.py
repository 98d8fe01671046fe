"""Metrics, each a documented function of plain strings, testable on hand-checked examples."""
