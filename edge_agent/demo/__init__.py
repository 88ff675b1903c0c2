"""The offline demo: a simulated home day replayed through a local broker to the agent."""
