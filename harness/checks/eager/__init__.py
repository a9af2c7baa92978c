"""The eager area: a GRL's autograd semantics without any transformation (docs/checks.md,
'Eager'; the contexts in docs/contexts.md). One job per module, imported here in the report's
column order (definition order within each):

- `reversal`: forward.identity, backward.*, alpha.update;
- `graph`: graph.shared_trunk, graph.several_grls, inplace.after (the graph around the layer);
- `memory`: memory.saved, memory.graph_freed, memory.offload;
- `contexts`: the contexts real training and evaluation put a GRL in (autocast,
  checkpointing, serialization, grad mode).
"""
import importlib

# The modules in column order (an import sorter would reorder `from . import a, b`).
MODULES = ("reversal", "graph", "memory", "contexts")
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
