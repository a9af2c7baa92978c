"""The documents written: reports, expectations files, comparisons, advice. No torch import."""
