"""What the controller prints at the end: the matrix, the pins it was held to, and where the
report and the row logs went. Reads the matrix, decides nothing."""
from __future__ import annotations

import os
from pathlib import Path

from grl_conformance.plugin.matrix import Matrix
from grl_conformance.plugin.pins import pins_of


def summary(terminalreporter, matrix: Matrix, written: list[Path]) -> None:
    doc = matrix.report_doc()
    if doc is None:
        return
    from grl_conformance.results import report

    config = matrix.config
    terminalreporter.section("GRL compatibility matrix")
    pins = pins_of(config)
    terminalreporter.write_line(pins.choice.note if pins is not None else
                                "expectations: none for this torch: the "
                                "reference rows are not pinned")
    if doc.get("sandbox"):
        terminalreporter.write_line(doc["sandbox"])
    terminalreporter.write_line(report.render_terminal(doc))
    for verdict, messages in sorted(matrix.notes.items()):
        terminalreporter.write_line(f"{verdict.upper()} EXPECTATIONS ({len(messages)}):")
        for message in messages:
            terminalreporter.write_line(f"  {message}")
    for path in written:
        terminalreporter.write_line(f"report written: {path}")
    keep = config.getoption("--grl-keep-logs")
    if keep:
        terminalreporter.write_line(f"row logs (the last 256 KiB of each row process's output) "
                                    f"kept in: {os.path.abspath(keep)}")
