"""The compatibility matrix, transform columns: export, TorchScript, torch.func, ONNX.

A cell's status is a finding written to the report, not a test failure, except for the
package's own reference rows, whose expected cells per torch live in the expectations files
(reports/baselines/torch-<major.minor>.json; see harness/results/expectations.py).
"""
AREA = "transforms"


def test_cell(grl_cell):
    grl_cell.run()
