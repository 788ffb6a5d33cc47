"""One name-pattern syntax: a glob over the whole name, or re:REGEX searched in it."""

from __future__ import annotations

import pytest

from trtopt.errors import ConfigError
from trtopt.patterns import check_patterns, matches
from trtopt.quant.config import exclude_to_regex
from trtopt.sparsity import PruneConfig


def test_a_glob_matches_the_whole_name_and_re_searches_anywhere():
    assert matches("layer1.conv", ["layer1.*"]) and not matches("x.layer1.conv", ["layer1.*"])
    assert matches("x.layer1.conv", ["re:layer1"])


def test_prune_and_quantize_refuse_a_bad_regex_with_the_same_words():
    for fail in (lambda: PruneConfig(exclude=("re:(",)), lambda: exclude_to_regex(["re:("]),
                 lambda: check_patterns(["re:("], "x")):
        with pytest.raises(ConfigError, match="invalid regular expression"):
            fail()
