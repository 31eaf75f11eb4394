"""Helpers shared by test files (no tests here): train material, app projects, a made-up
six-dimension, three-reviewer dialogue project."""
