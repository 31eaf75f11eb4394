"""The offline install kit: build it on a connected machine, verify it on the laptop."""
