"""Typed optimization profiles: the Profile value, text parsed once, specs, resolution against a model."""

from __future__ import annotations

import pytest

from trtopt.backends.tensorrt.config import BuildConfig, Profile
from trtopt.backends.tensorrt.graph import GraphInfo
from trtopt.backends.tensorrt.profiles import (
    GIVEN,
    merge_profiles,
    parse_shapes,
    profiles_from_specs,
    resolve_profiles_with_sources,
    src_is_default,
)
from trtopt.errors import ConfigError
from trtopt.inputs import parse_input_specs

IMG = Profile("input", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))


def test_a_profile_holds_int_tuples_and_prints_as_the_cli_spells_it():
    p = Profile("input", [1, 3, 8, 8], [4, 3, 8, 8], [16, 3, 8, 8])  # lists, as TOML gives them
    assert p == IMG and p.shapes() == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert str(p) == "input:1x3x8x8,4x3x8x8,16x3x8x8"
    assert str(Profile.static("mask", (2, 5))) == "mask:2x5"
    assert parse_shapes([str(p), "mask:2x5"]) == (p, Profile.static("mask", (2, 5)))


@pytest.mark.parametrize(("shapes", "msg"), [
    (((4, 3), (1, 3), (8, 3)), "profile x: min > opt"),
    (((1, 3), (8, 3), (4, 3)), "profile x: opt > max"),
    (((1, 3), (2, 3, 1), (4, 3)), "same rank"),
    (((0, 3), (1, 3), (4, 3)), "positive"),
])
def test_an_impossible_profile_is_refused_when_made(shapes, msg):
    with pytest.raises(ConfigError, match=msg) as exc:
        Profile("x", *shapes)
    assert "\n" not in str(exc.value)


def test_cli_text_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"^--shapes input: min > opt \(16x3x8x8 vs 4x3x8x8\)"):
        parse_shapes(["input:16x3x8x8,4x3x8x8,32x3x8x8"])


def test_build_config_takes_profiles_or_toml_tables_never_text():
    table = {"name": "input", "min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [16, 3, 8, 8]}
    assert BuildConfig(shapes=[table]).shapes == (IMG,)
    with pytest.raises(ConfigError, match="takes Profile objects, not text .*parse_shapes"):
        BuildConfig(shapes=("input:1x3x8x8",))
    with pytest.raises(ConfigError, match=r"names input\(s\) \['input'\] twice"):
        BuildConfig(shapes=(IMG, IMG))


def test_options_record_the_profile_text_so_cache_keys_keep_their_form():
    assert BuildConfig(shapes=(IMG,)).to_dict()["shapes"] == ["input:1x3x8x8,4x3x8x8,16x3x8x8"]


def test_specs_become_profiles_for_their_dynamic_inputs_only():
    specs = parse_input_specs(["ids:int64:batch=1..8..32xseq=16..64..128", "scale:float32:1"])
    assert profiles_from_specs(specs) == (Profile("ids", (1, 16), (8, 64), (32, 128)),)


def test_given_profiles_win_over_those_from_specs():
    mine = Profile.static("ids", (4, 64))
    from_specs = (Profile("ids", (1, 16), (8, 64), (32, 128)), Profile.static("mask", (4, 64)))
    assert merge_profiles((mine,), from_specs) == (mine, Profile.static("mask", (4, 64)))


def test_resolution_says_where_every_profile_came_from():
    info = GraphInfo(inputs={"ids": (-1, -1), "mask": (-1, -1), "img": (-1, 3)},
                     dim_names={"ids": ("batch", "seq"), "mask": ("batch", "seq"), "img": (None, None)})
    cfg = BuildConfig(shapes=(Profile("ids", (1, 16), (8, 64), (32, 128)),), default_batch=(1, 2, 4))
    profiles, sources = resolve_profiles_with_sources(info, cfg)
    assert profiles["mask"] == profiles["ids"] == ((1, 16), (8, 64), (32, 128))
    assert sources == {"ids": GIVEN, "mask": "dims batch, seq of ids", "img": "default batch [1, 2, 4]"}
    assert profiles["img"] == ((1, 3), (2, 3), (4, 3)) and src_is_default(sources["img"])
