"""Actions: an allowlist, constrained proposals from the model, a policy that decides."""
