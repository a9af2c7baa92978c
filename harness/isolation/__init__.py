"""Where a cell runs: one sandboxed child per row, forked from a preloaded server."""
