"""Repo root marker: pytest puts this directory on sys.path, so the self-tests import `tests.*`.

The harness's plugin comes from the installed package's `pytest11` entry point.
"""
