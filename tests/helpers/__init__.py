"""Helpers shared by test files (no tests here): train material, app projects."""
