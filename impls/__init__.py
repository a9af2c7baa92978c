"""The implementations under test: one module per implementation, each defining `IMPL`
(or a list `IMPLS`) of `grl_conformance.core.registry.Impl`. Adding a file here adds a row."""
