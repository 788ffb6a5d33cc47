"""``package.module:function`` references: what counts as one, and import errors in words."""

from __future__ import annotations

import pytest

from trtopt.errors import InputError
from trtopt.refs import import_callable, is_import_ref


def test_import_refs(user_pkg):
    assert is_import_ref("userpkg.nets:make") and not is_import_ref("model.pt") and not is_import_ref("resnet18")
    assert callable(import_callable("userpkg.nets:make"))
    with pytest.raises(InputError, match="cannot import module 'nopkg.nets'.*PYTHONPATH"):
        import_callable("nopkg.nets:make", "model factory")
    with pytest.raises(InputError, match="has no attribute 'nothing'"):
        import_callable("userpkg.nets:nothing")
