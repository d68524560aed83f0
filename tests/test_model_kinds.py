"""model_kinds: every model's name is built from its kind and sequence and parsed back, an
unknown name is refused in one line, and a model's predictions file is `<name>.csv`."""

import pytest

from sarcograde import baselines as bl
from sarcograde import model_kinds as kinds
from sarcograde.errors import SarcogradeError


@pytest.mark.parametrize("kind, sequence, name", [
    (kinds.DL, "T2FS", "DL-T2FS"),
    (kinds.FUSION, None, "DL-fusion"),
    (kinds.RADIOMICS, "T1FSGd", "radiomics-T1FSGd"),
    (kinds.CLINICAL, None, "clinical"),
    (kinds.VOLUME, None, "volume"),
    (kinds.CLINICAL_VOLUME, None, "clinical+volume"),
    (kinds.PACKAGE, "T2FS", "PKG-T2FS"),
    (kinds.PACKAGE_FUSION, None, "PKG-fusion"),
    (kinds.DL, "T2.FS", "DL-T2.FS"),            # any sequence name a study accepts
    (kinds.RADIOMICS, "T1_post-Gd", "radiomics-T1_post-Gd"),
])
def test_a_name_is_built_from_its_kind_and_parsed_back(kind, sequence, name):
    assert kinds.name(kind, sequence) == name
    parsed = kinds.parse(name)
    assert (parsed.kind, parsed.sequence) == (kind, sequence)
    assert str(parsed) == name
    assert kinds.prediction_file(name) == f"{name}.csv"


def test_every_kind_is_named_and_parsed():
    for kind in kinds.TEMPLATES:
        sequence = "T1" if kinds.per_sequence(kind) else None
        assert kinds.parse(kinds.name(kind, sequence)) == kinds.ModelName(kind, sequence)


@pytest.mark.parametrize("name", ["DL_T2", "DL-", "dl-T2", "fusion", "radiomics", "PKG",
                                  "clinical-volume", "DL-T2/x", " DL-T2"])
def test_an_unknown_name_is_one_line_listing_the_kinds(name):
    with pytest.raises(SarcogradeError) as raised:
        kinds.parse(name)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"unknown model name {name!r}: use ")
    assert all(form in message for form in ("DL-<SEQ>", "DL-fusion", "radiomics-<SEQ>",
                                            "clinical+volume", "PKG-<SEQ>"))
    assert kinds.kind_of(name) is None


def test_a_per_sequence_kind_needs_its_sequence_and_the_others_take_none():
    with pytest.raises(ValueError):
        kinds.name(kinds.DL)
    with pytest.raises(ValueError):
        kinds.name(kinds.FUSION, "T2FS")


def test_a_study_names_its_models_in_kind_order_one_per_sequence():
    assert kinds.study_models([kinds.CLINICAL_VOLUME, kinds.VOLUME, kinds.CLINICAL,
                               kinds.RADIOMICS, kinds.FUSION, kinds.DL], ["T1", "T2"]) == [
        "DL-T1", "DL-T2", "DL-fusion", "radiomics-T1", "radiomics-T2", "clinical", "volume",
        "clinical+volume"]
    assert kinds.PACKAGE not in kinds.STUDY_KINDS  # reserved: a study cannot list it yet


def test_the_baselines_keys_are_those_of_the_baselines_module():
    assert list(kinds.BASELINE_KEYS) == list(kinds.BASELINES)
    assert set(kinds.BASELINE_KEYS.values()) == set(bl.BASELINES) == set(bl.LABELS)
    assert bl.BASELINES[kinds.BASELINE_KEYS[kinds.CLINICAL_VOLUME]] == bl.CLINICAL + bl.VOLUME
