"""The pytest glue: one test per cell, the matrix at the end, the torch-upgrade gate."""
