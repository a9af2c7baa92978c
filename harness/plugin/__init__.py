"""The pytest glue: one test per cell, the matrix at the end, the torch-upgrade gate
(pytest_plugin.py registers the parts; README, "Layout", says what each one does)."""
