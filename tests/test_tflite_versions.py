"""The compiler refuses a .tflite that a target's oldest promised TFLite runtime cannot load (issue 9)."""
import pytest

from compile.emit_tflite import check_runtime, required_runtime
from compile.errors import UserError


def test_required_runtime_is_the_newest_minimum_over_the_operators_used():
    need, why = required_runtime([("CONV_2D", 1), ("FULLY_CONNECTED", 9), ("ADD", 1)])
    assert need == "2.3.0" and "FULLY_CONNECTED" in why


def test_an_operator_version_newer_than_the_target_promises_is_refused_with_one_line():
    target = {"name": "xu3", "tflite_min_runtime": "2.7.0"}
    assert check_runtime([("CONV_2D", 5)], target) == "2.4.0"
    with pytest.raises(UserError) as e:
        check_runtime([("CONV_2D", 6)], target)  # CONV_2D v6 needs 2.9.0
    msg = str(e.value)
    assert "2.9.0" in msg and "xu3" in msg and "\n" not in msg


def test_versions_compare_numerically_not_as_text():
    # A target promising 2.10 can load an operator that needs 2.9; compared as text, "2.9.0" > "2.10.0".
    assert check_runtime([("CONV_2D", 6)], {"name": "t", "tflite_min_runtime": "2.10.0"}) == "2.9.0"
    with pytest.raises(UserError):
        check_runtime([("CONV_2D", 6)], {"name": "t", "tflite_min_runtime": "2.8.0"})


def test_an_operator_missing_from_the_table_stops_the_build():
    with pytest.raises(UserError) as e:
        required_runtime([("BATCH_MATMUL", 99)])
    assert "BATCH_MATMUL" in str(e.value) and "tflite_op_versions.json" in str(e.value)
