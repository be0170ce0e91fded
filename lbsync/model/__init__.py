"""Immutable values shared by every layer, and the KV contract that produces them."""
