"""Opt-outs, organizations, batches and matching. Imports registry, never the reverse."""
