"""Creators, their photos (kept only as hashes), claims and the consent ledger."""
