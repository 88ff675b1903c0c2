"""Home Assistant integration: MQTT discovery payloads and their (re)publishing."""
