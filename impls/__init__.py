"""The implementations under test: one module per implementation, each defining `IMPL`
(or a list `IMPLS`) of `harness.registry.Impl`. Adding a file here adds a row."""
