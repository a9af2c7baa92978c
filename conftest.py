# The harness's pytest plugin, active for plain `pytest` in the repo root.
pytest_plugins = ["harness.pytest_plugin"]
