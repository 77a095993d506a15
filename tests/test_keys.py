"""Settings keys: one hash of canonical JSON, one folder-name convention."""

import numpy as np
import pytest

from tttlab.keys import canonical_json, folder_name, settings_digest


def test_equal_settings_give_equal_keys_in_any_key_order_and_type():
    a = {"width": 25, "fractions": (0.5, 1.0), "seed": np.int64(0)}
    b = {"seed": 0, "fractions": [0.5, 1.0], "width": 25}
    assert canonical_json(a) == canonical_json(b) == '{"fractions":[0.5,1.0],"seed":0,"width":25}'
    assert settings_digest(a) == settings_digest(b)
    assert len(settings_digest(a)) == 64
    assert settings_digest(a) != settings_digest(b | {"width": 50})


def test_folders_are_named_by_the_first_ten_hex_digits():
    key = settings_digest({"model": "cnn"})
    assert folder_name("sae", key) == f"sae-{key[:10]}"
    with pytest.raises(ValueError, match="shorter than 10 hex digits"):
        folder_name("sae", "abc")


def test_settings_that_json_cannot_hold_are_refused():
    with pytest.raises(TypeError, match="cannot write a object to JSON"):
        settings_digest({"x": object()})
