"""Meta-prompts, written in our own words, one module per method."""
