"""Tests of hostwire gateway (a package, so that its conftest and kit have their own names)."""
