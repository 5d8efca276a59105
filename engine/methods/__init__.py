"""Search methods. Each one advances by explicit steps (see engine.runner)."""
