"""Broker transports: the small interface the service talks to, and its paho adapter."""
