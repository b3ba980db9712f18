"""The application `tinyward bench sandbox` runs (see sensor.toml here)."""
