"""The desired state, built by pure functions: health filter, group membership, split math."""
