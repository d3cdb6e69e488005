"""The test suite (a package so that test helpers import by package name)."""
